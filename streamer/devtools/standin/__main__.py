"""Command line of the model stand-in: ``python -m streamer.devtools.standin --port 8001 ...``.

Prints ``stand-in listening on http://HOST:PORT`` once it accepts connections and shuts down
cleanly on SIGTERM or SIGINT. :func:`main` can be reused as a subcommand of the project CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable

from pydantic import ValidationError

from .server import (
    DEFAULT_MAX_MODEL_LEN,
    DEFAULT_MODEL,
    REPLY_SHAPES,
    FaultConfig,
    StandinConfig,
    running_standin,
)

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The stand-in's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m streamer.devtools.standin",
        description="vLLM-compatible stand-in for the AlignXplore+ model (baseline answers).",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    add("--port", type=int, default=8001, help="port, 0 = any free port (default: %(default)s)")
    add("--model", default=DEFAULT_MODEL, help="served model id (default: %(default)s)")
    add("--max-model-len", type=int, default=DEFAULT_MAX_MODEL_LEN, help="context length")
    add("--ttft-ms", type=float, default=0.0, help="time to first token, ms")
    add("--per-token-ms", type=float, default=0.0, help="time per completion token, ms")
    add("--jitter-ms", type=float, default=0.0, help="uniform +- jitter per request, ms")
    add("--max-concurrency", type=int, default=None, help="requests generating at once")
    add("--max-queue", type=int, default=None, help="queued requests beyond which 429 is sent")
    add("--seed", type=int, default=0, help="seed of the fault and jitter RNGs")
    add("--error-rate", type=float, default=0.0, help="probability of an HTTP error")
    add("--error-status", type=int, default=503, choices=(429, 500, 503))
    add("--timeout-rate", type=float, default=0.0, help="probability of a hang then disconnect")
    add("--hang-s", type=float, default=30.0, help="hang duration, seconds")
    add("--malformed-rate", type=float, default=0.0, help="probability of a malformed reply")
    add(
        "--malformed-kind",
        default="no_think_close",
        choices=("no_think_close", "double_think_close", "empty_summary", "truncated"),
    )
    add("--fail-next", type=int, default=0, help="the first N chat requests fail")
    add("--reasoning-parser", default="none",
        choices=("none", "reasoning_content", "reasoning", "both"),
        help="where a reply's thinking goes: inline (none) or a separate field, as vLLM/llama.cpp "
             "do with a reasoning parser; with a --reply-shape other than inline, a value "
             "other than none overrides the shape's field (default: %(default)s)")
    add("--reply-shape", default="inline", choices=REPLY_SHAPES,
        help="which engine's dialect to speak: inline (vLLM, no reasoning parser: thinking "
             "inline in content), vllm-reasoning (vLLM >= 0.16 with a reasoning parser: "
             "message.reasoning), vllm-legacy (vLLM <= 0.11.0: message.reasoning_content), "
             "sglang (reasoning_content; separate_reasoning=false keeps it inline), llamacpp "
             "(llama.cpp server: reasoning_content, reasoning_format=none keeps it inline, "
             "/apply-template, /slots, timings) (default: %(default)s)")
    add("--reject-fields", type=_field_list, default=[], metavar="FIELD[,FIELD...]",
        help="top-level chat request keys answered with a 400 naming the field, as a server "
             "that does not know them (e.g. min_p,repetition_penalty)")
    add("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def _field_list(text: str) -> list[str]:
    """``"min_p, repetition_penalty"`` -> ``["min_p", "repetition_penalty"]``."""
    return [name.strip() for name in text.split(",") if name.strip()]


def config_from_args(args: argparse.Namespace) -> StandinConfig:
    """Build a :class:`StandinConfig` from parsed arguments (raises ``ValidationError``)."""
    faults = FaultConfig(
        error_rate=args.error_rate,
        error_status=args.error_status,
        timeout_rate=args.timeout_rate,
        hang_s=args.hang_s,
        malformed_rate=args.malformed_rate,
        malformed_kind=args.malformed_kind,
        fail_next=args.fail_next,
    )
    return StandinConfig(
        model=args.model,
        max_model_len=args.max_model_len,
        ttft_ms=args.ttft_ms,
        per_token_ms=args.per_token_ms,
        jitter_ms=args.jitter_ms,
        max_concurrency=args.max_concurrency,
        max_queue=args.max_queue,
        seed=args.seed,
        faults=faults,
        reasoning_parser=args.reasoning_parser,
        reply_shape=args.reply_shape,
        reject_fields=args.reject_fields,
    )


async def serve(
    config: StandinConfig,
    host: str,
    port: int,
    *,
    on_ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set or SIGTERM/SIGINT arrives."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no support
            pass
    try:
        async with running_standin(config, host, port) as base_url:
            if on_ready is not None:
                on_ready(base_url)
            await stop.wait()
            logger.info("stand-in: shutting down")
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        config = config_from_args(args)
    except ValidationError as exc:
        print(f"invalid stand-in configuration:\n{exc}", file=sys.stderr)
        return 2

    def announce(base_url: str) -> None:
        print(f"stand-in listening on {base_url}", flush=True)

    try:
        asyncio.run(serve(config, args.host, args.port, on_ready=announce))
    except OSError as exc:
        print(f"stand-in could not start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
