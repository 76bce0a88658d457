"""`streamer` command line: the worker, the embedded replay, provisioning and reads."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from .. import __version__
from ..errors import StreamerError
from ..logging import configure_logging
from ..settings import Settings

log = logging.getLogger("streamer")


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        print(f"invalid STREAMER_* configuration:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the faust worker against Kafka, the store and the model pool."""
    from faust import Worker

    from ..adapters.kafka.admin import ensure_topics
    from ..app import create_app

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    problems = asyncio.run(ensure_topics(settings.kafka))
    for problem in problems:
        log.error("topic mismatch: %s", problem)
    if problems:
        return 3
    streamer_app = create_app(settings)
    # logging stays ours (JSON with trace ids): faust would replace the root handlers
    worker = Worker(streamer_app.app, loglevel=settings.log_level.lower(), quiet=True,
                    override_logging=False)
    worker.execute_from_commandline()
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay a JSONL clickstream through the domain code into SQLite (the embedded demo)."""
    from ..app import update_policy
    from .replay import BUNDLED_SAMPLE, run_replay

    settings = _settings()
    configure_logging("WARNING" if not args.verbose else "INFO", settings.log_format)
    if args.model_url:
        from ..adapters.llm.client import OpenAICompatSummaryModel

        model = OpenAICompatSummaryModel([args.model_url], model=settings.model.model,
                                         timeout_s=settings.model.timeout_s)
    else:
        from ..adapters.llm.baseline import BaselineSummaryModel

        model = BaselineSummaryModel()
    path = Path(args.path) if args.path else BUNDLED_SAMPLE
    if not path.exists():
        print(f"no such file: {path} (generate one with `python -m streamer.devtools.synthetic`)",
              file=sys.stderr)
        return 2
    run_replay(
        path,
        model=model,
        sqlite_path=args.sqlite,
        policy=update_policy(settings),
        window_events=args.window_events,
        window_age_s=args.window_age_s,
        show_users=args.users,
        progress=not args.no_progress,
    )
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    """Build summaries from a JSONL history file into the configured store, as the stream does."""
    from aiokafka import AIOKafkaProducer

    from ..adapters.kafka.publish import KafkaChangePublisher
    from ..app import build_model, build_store, build_token_counter, update_policy
    from .replay import replay

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    path = Path(args.path)
    if not path.exists():
        print(f"no such file: {path}", file=sys.stderr)
        return 2
    lines = [ln for ln in path.read_bytes().splitlines() if ln.strip()]
    if args.engine == "vllm":
        from ..adapters.llm.vllm_engine import VllmEngineSummaryModel

        model = VllmEngineSummaryModel(
            settings.model.model,
            max_model_len=settings.model.context_tokens,
            tensor_parallel_size=args.tensor_parallel_size,
            temperature=settings.model.temperature,
            top_p=settings.model.top_p,
            top_k=settings.model.top_k,
            max_tokens=settings.model.max_tokens,
        )
    else:
        model = build_model(settings)
    store = build_store(settings)

    async def _run() -> int:
        producer = None
        publisher = None
        if args.publish:
            producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers,
                                        acks="all")
            await producer.start()

            async def send(topic, key, value, headers):  # type: ignore[no-untyped-def]
                await producer.send_and_wait(topic, value, key=key, headers=list(headers))

            publisher = KafkaChangePublisher(send, settings.kafka.output_topic,
                                             settings.kafka.failures_topic)
        try:
            report = await replay(
                lines, store=store, model=model, policy=update_policy(settings),
                window_events=settings.window.max_events, window_age_s=args.window_age_s,
                concurrency=settings.model.max_concurrency, progress=not args.no_progress,
                publisher=publisher, token_counter=build_token_counter(model),
            )
        finally:
            await model.aclose()
            await store.aclose()
            if producer is not None:
                await producer.stop()
        print(f"backfilled {report.users} users from {report.events} records -> "
              f"{len(report.changes)} versions; outcomes {dict(report.outcomes)}; "
              f"invalid {dict(report.invalid)}")
        return 0 if not report.outcomes.get("failed") else 1

    return asyncio.run(_run())


def cmd_eval(args: argparse.Namespace) -> int:
    """The paper's evaluation: streaming summaries, then the pairwise judgement (acc., AUC)."""
    from ..adapters.llm.baseline import BaselineSummaryModel
    from ..adapters.llm.client import OpenAICompatSummaryModel
    from ..app import update_policy
    from ..evaluation.benchmark import BUNDLED_SYNTHETIC, evaluate, load_benchmark, synthetic_benchmark

    settings = _settings()
    configure_logging("WARNING", settings.log_format)
    if args.make_synthetic:
        rows = synthetic_benchmark()
        Path(args.make_synthetic).write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"wrote {len(rows)} users to {args.make_synthetic}")
        return 0
    path = Path(args.path) if args.path else BUNDLED_SYNTHETIC
    records = load_benchmark(path)
    dataset = args.dataset or path.stem
    engines = []
    if args.summarizer_url:
        engines.append(OpenAICompatSummaryModel([args.summarizer_url], model=args.summarizer_model,
                                                timeout_s=settings.model.timeout_s,
                                                health_interval_s=None))
    if args.baseline or not args.summarizer_url:
        engines.append(BaselineSummaryModel())

    async def _run() -> list[dict[str, object]]:
        results = []
        for engine in engines:
            try:
                report = await evaluate(records, summary_model=engine, judge_url=args.judge_url,
                                        judge_model=args.judge_model, dataset=dataset,
                                        policy=update_policy(settings))
            finally:
                await engine.aclose()
            results.append(report.headline() | {"rows": report.rows})
            print(f"{report.engine:32s} users={report.users} accuracy={report.accuracy:.3f} "
                  f"auc={'n/a' if report.auc is None else f'{report.auc:.3f}'} "
                  f"unparsed={report.unparsed} failed_summaries={report.failed_summaries}")
        return results

    results = asyncio.run(_run())
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, ensure_ascii=False))
    return 0


def cmd_standin(args: argparse.Namespace, rest: list[str]) -> int:
    """Run the OpenAI-compatible model stand-in (tests and benchmarks)."""
    from ..devtools.standin.__main__ import main as standin_main

    return standin_main(rest)


def cmd_migrate(args: argparse.Namespace) -> int:
    """Create the keyspace and apply pending CQL migrations."""
    from ..adapters.cassandra.store import connect, migrate

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    cluster, session = connect(settings.cassandra)
    try:
        applied = migrate(session, settings.cassandra)
    finally:
        cluster.shutdown()
    print(f"applied: {', '.join(applied) or 'nothing (schema up to date)'}")
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    """Create the input, output and dead-letter topics; report mismatches."""
    from ..adapters.kafka.admin import ensure_topics, topic_specs

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    problems = asyncio.run(ensure_topics(settings.kafka))
    for spec in topic_specs(settings.kafka):
        print(f"{spec.name}: partitions={spec.partitions} {spec.config}")
    for problem in problems:
        print(f"MISMATCH: {problem}", file=sys.stderr)
    return 1 if problems else 0


def cmd_read(args: argparse.Namespace) -> int:
    """Print a user's current summary (`get`) or full history (`history`) as JSON."""
    from ..app import build_store

    settings = _settings()
    configure_logging("WARNING", settings.log_format)

    async def _read() -> object:
        store = build_store(settings)
        try:
            if args.command == "get":
                record = await store.get_current(args.user_id)
                return record.model_dump(mode="json") if record else None
            return [r.model_dump(mode="json") for r in await store.history(args.user_id)]
        finally:
            await store.aclose()

    result = asyncio.run(_read())
    if result is None or result == []:
        print(f"no summary for user {args.user_id!r}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def cmd_parked(args: argparse.Namespace) -> int:
    """Windows parked after bounded attempts: list them, retry (re-produce their original
    records to the input topic, then unpark) or drop them."""
    from ..app import build_buffer, build_store

    settings = _settings()
    configure_logging("WARNING", settings.log_format)

    async def _run() -> int:
        store = build_store(settings)
        buffer = build_buffer(settings, store)
        try:
            windows = await buffer.parked(args.user_id, limit=args.limit)
            if args.window_id:
                windows = [w for w in windows if w.window_id == args.window_id]
            if args.action == "list":
                for w in windows:
                    print(json.dumps({
                        "user_id": w.user_id, "window_id": w.window_id,
                        "partition": w.partition, "error_type": w.error_type,
                        "reason": w.reason, "attempts": w.attempts,
                        "parked_at": w.parked_at, "event_ids": [e.event_id for e in w.entries],
                    }, ensure_ascii=False))
                print(f"{len(windows)} parked window(s)", file=sys.stderr)
                return 0
            if not windows:
                print("no parked window matches (give USER_ID and optionally --window-id)",
                      file=sys.stderr)
                return 1
            if args.action == "retry":
                from aiokafka import AIOKafkaProducer

                producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers,
                                            acks="all", enable_idempotence=True)
                await producer.start()
                try:
                    for w in windows:
                        for e in w.entries:
                            await producer.send_and_wait(settings.kafka.input_topic, e.value,
                                                         key=w.user_id.encode())
                        await buffer.unpark(w.user_id, w.window_id)
                        print(f"retried {w.user_id}/{w.window_id}: {len(w.entries)} records "
                              f"re-produced to {settings.kafka.input_topic}")
                finally:
                    await producer.stop()
                return 0
            for w in windows:  # drop
                await buffer.unpark(w.user_id, w.window_id)
                print(f"dropped {w.user_id}/{w.window_id} ({len(w.entries)} events)")
            return 0
        finally:
            await store.aclose()

    return asyncio.run(_run())


def cmd_api(args: argparse.Namespace) -> int:
    """Serve the read API: current summary, history pages, as-of reads, token-guarded rollback."""
    import signal

    from aiohttp import web
    from aiokafka import AIOKafkaProducer

    from ..adapters.kafka.publish import KafkaChangePublisher
    from ..app import build_store
    from ..telemetry import setup_telemetry
    from .api import create_api, store_probe

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    host = args.host or settings.api.host
    port = args.port or settings.api.port
    token = settings.api.token.get_secret_value() if settings.api.token else None
    if not token:
        log.warning("STREAMER_API__TOKEN is not set: the rollback route is disabled (403)")
    store = build_store(settings)  # here, not in a thread: SQLite connections are per-thread

    async def _serve() -> int:
        producer: AIOKafkaProducer | None = None
        lock = asyncio.Lock()

        async def connect_producer() -> None:
            """Started on the first rollback, before anything is written, so reads need no Kafka."""
            nonlocal producer
            async with lock:
                if producer is not None:
                    return
                candidate = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers,
                                             acks="all", enable_idempotence=True)
                try:
                    await candidate.start()
                except BaseException:
                    await candidate.stop()
                    raise
                producer = candidate

        async def send(topic, key, value, headers):  # type: ignore[no-untyped-def]
            await connect_producer()
            assert producer is not None
            await producer.send_and_wait(topic, value, key=key, headers=list(headers))

        telemetry = setup_telemetry(settings)
        app = create_api(store, KafkaChangePublisher(send, settings.kafka.output_topic),
                         token=token, ready=store_probe(store), before_write=connect_producer,
                         telemetry=telemetry)
        runner = web.AppRunner(app, shutdown_timeout=10.0)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            log.info("read API listening on http://%s:%d", host, port)
            await stop.wait()
            log.info("stopping the read API")
        finally:
            await runner.cleanup()  # stops accepting, lets in-flight requests finish
            if producer is not None:
                await producer.stop()
            await store.aclose()
            telemetry.shutdown()
        return 0

    return asyncio.run(_serve())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer",
        description="prefstream: streaming natural-language preference profiles. "
        "Configuration comes from STREAMER_* environment variables (see README).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help=cmd_worker.__doc__)
    rp = sub.add_parser("replay", help=cmd_replay.__doc__)
    rp.add_argument("path", nargs="?", help="JSONL file (default: the bundled sample)")
    rp.add_argument("--model-url", help="OpenAI-compatible base URL instead of the baseline")
    rp.add_argument("--sqlite", default="prefstream-demo.sqlite3", help="SQLite file to write")
    rp.add_argument("--window-events", type=int, default=6, help="events per window")
    rp.add_argument("--window-age-s", type=float, default=3 * 86400,
                    help="max window age in EVENT time (seconds)")
    rp.add_argument("--users", type=int, default=4, help="how many users' evolution to print")
    rp.add_argument("--no-progress", action="store_true")
    rp.add_argument("-v", "--verbose", action="store_true")
    bf = sub.add_parser("backfill", help=cmd_backfill.__doc__)
    bf.add_argument("path", help="JSONL file of interaction events (the input topic's format)")
    bf.add_argument("--engine", choices=["pool", "vllm"], default="pool",
                    help="pool: STREAMER_MODEL__* endpoints; vllm: in-process engine (gpu extra)")
    bf.add_argument("--tensor-parallel-size", type=int, default=1)
    bf.add_argument("--window-age-s", type=float, default=3 * 86400,
                    help="max window age in EVENT time (seconds)")
    bf.add_argument("--publish", action="store_true",
                    help="also publish change events to STREAMER_KAFKA__OUTPUT_TOPIC")
    bf.add_argument("--no-progress", action="store_true")
    ev = sub.add_parser("eval", help=cmd_eval.__doc__)
    ev.add_argument("path", nargs="?", help="benchmark JSONL (default: bundled synthetic set)")
    ev.add_argument("--summarizer-url", help="OpenAI-compatible base URL serving AlignXplore+")
    ev.add_argument("--summarizer-model", default="VanillaH1/AlignXplore-Plus")
    ev.add_argument("--judge-url", default="http://127.0.0.1:8001/v1",
                    help="OpenAI-compatible base URL of the downstream judge")
    ev.add_argument("--judge-model", default="Qwen/Qwen3-8B")
    ev.add_argument("--baseline", action="store_true",
                    help="also score the CPU baseline summarizer (always on without a summarizer)")
    ev.add_argument("--dataset", help="dataset name for the stage split (default: file stem; "
                    "amazon*/mind*/movielens* use thirds)")
    ev.add_argument("--out", help="write per-user results as JSON")
    ev.add_argument("--make-synthetic", metavar="FILE", help="write the synthetic set and exit")
    sub.add_parser("standin", help=cmd_standin.__doc__, add_help=False)
    sub.add_parser("migrate", help=cmd_migrate.__doc__)
    tp = sub.add_parser("topics", help=cmd_topics.__doc__)
    tp.add_argument("action", choices=["ensure"])
    for name in ("get", "history"):
        p = sub.add_parser(name, help=cmd_read.__doc__)
        p.add_argument("user_id")
    pk = sub.add_parser("parked", help=cmd_parked.__doc__)
    pk.add_argument("action", choices=["list", "retry", "drop"])
    pk.add_argument("user_id", nargs="?", help="only this user's windows (required by drop)")
    pk.add_argument("--window-id", help="only this window")
    pk.add_argument("--limit", type=int, default=100)
    ap = sub.add_parser("api", help=cmd_api.__doc__)
    ap.add_argument("--host", help="listen address (default: STREAMER_API__HOST)")
    ap.add_argument("--port", type=int, help="listen port (default: STREAMER_API__PORT)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["standin"]:
        return cmd_standin(argparse.Namespace(), argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "worker":
        # faust's Worker parses sys.argv itself; give it only the program name
        sys.argv = sys.argv[:1]
    handlers = {
        "worker": cmd_worker,
        "replay": cmd_replay,
        "backfill": cmd_backfill,
        "eval": cmd_eval,
        "migrate": cmd_migrate,
        "topics": cmd_topics,
        "get": cmd_read,
        "history": cmd_read,
        "api": cmd_api,
        "parked": cmd_parked,
    }
    try:
        return handlers[args.command](args)
    except StreamerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ConnectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
