"""`streamer`: the command line (click).  Every command builds what it runs through the
composition root (``streamer/app.py``) and reads its configuration from ``STREAMER_*``
environment variables (see the README); options only choose what to run.

Exit codes: 0 success; 1 the operation failed (nothing found, updates failed); 2 usage or
configuration error; 3 a Kafka topic differs from the settings; 69 a dependency (Kafka,
Cassandra, the model pool) is unavailable.

Shell completion: ``eval "$(streamer completion bash)"`` (or ``zsh``, ``fish``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import shutil
import signal
import sys
import textwrap
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from click.shell_completion import get_completion_class
from pydantic import ValidationError

from .. import __version__
from ..domain.capacity import GPUS, plan_default
from ..errors import (
    ConfigurationError,
    InvalidEventError,
    StreamerError,
    TopicMismatchError,
    TransientError,
)
from ..logging import configure_logging
from ..settings import Settings

log = logging.getLogger("streamer")

EX_FAILED, EX_USAGE, EX_TOPICS, EX_UNAVAILABLE = 1, 2, 3, 69

F = TypeVar("F", bound=Callable[..., Any])


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise click.UsageError(f"invalid STREAMER_* configuration:\n{exc}") from exc


def _errors(fn: F) -> F:
    """Map the error tree to exit codes, with a one-line message on stderr."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TopicMismatchError as exc:
            for problem in exc.problems:
                click.echo(f"MISMATCH: {problem}", err=True)
            sys.exit(EX_TOPICS)
        except ConfigurationError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EX_USAGE)
        except TransientError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EX_UNAVAILABLE)
        except StreamerError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EX_FAILED)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog="Configuration: STREAMER_* environment variables (see the README).")
@click.version_option(__version__, prog_name="streamer")
def cli() -> None:
    """prefstream: streaming natural-language preference profiles."""


# --- running -------------------------------------------------------------------------------


@cli.command()
@_errors
def worker() -> None:
    """Run the faust worker against Kafka, the store and the model pool."""
    from faust import Worker

    from ..app import build_worker, check_model_pool, provision_topics, require_model_pool

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(provision_topics(settings))
    if settings.model.engine == "openai" and settings.model.self_check:
        require_model_pool(asyncio.run(check_model_pool(settings)))
    built = build_worker(settings)
    # logging stays ours (JSON with trace ids): faust would replace the root handlers
    Worker(built.app, loglevel=settings.log_level.lower(), quiet=True,
           override_logging=False).execute_from_commandline()


@cli.command()
@click.option("--host", help="Listen address.  [default: STREAMER_API__HOST]")
@click.option("--port", type=click.IntRange(1, 65535),
              help="Listen port.  [default: STREAMER_API__PORT]")
@_errors
def api(host: str | None, port: int | None) -> None:
    """Serve the read API: current summary, history pages, as-of reads, token-guarded rollback."""
    from aiohttp import web

    from ..app import build_api

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    host = host or settings.api.host
    port = port or settings.api.port
    served = build_api(settings)  # here, not in a thread: SQLite connections are per-thread

    async def serve() -> None:
        runner = web.AppRunner(served.app, shutdown_timeout=10.0)
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
            await served.aclose()

    asyncio.run(serve())


# --- replay, backfill, evaluation ----------------------------------------------------------

_age_option = click.option(
    "--window-age-s", type=click.FloatRange(min=0), default=None,
    help="Max window age in EVENT time, seconds.  [default: 259200, 3 days]")


@cli.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model-url", help="An OpenAI-compatible base URL instead of the CPU baseline.")
@click.option("--sqlite", default="prefstream-demo.sqlite3", show_default=True,
              help="SQLite file to write (replaced).")
@click.option("--window-events", type=click.IntRange(min=1),
              help="Events per window.  [default: STREAMER_WINDOW__MAX_EVENTS]")
@_age_option
@click.option("--users", type=click.IntRange(min=0), default=4, show_default=True,
              help="How many users' evolution to print.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO.")
@_errors
def replay(path: Path | None, model_url: str | None, sqlite: str, window_events: int | None,
           window_age_s: float | None, users: int, no_progress: bool, verbose: bool) -> None:
    """Replay a JSONL clickstream through the worker's own path into SQLite (the embedded demo;
    default: the bundled sample, with the labelled CPU baseline engine)."""
    from ..app import baseline_model, build_model, build_replay, demo_store
    from .replay import BUNDLED_SAMPLE, EVENT_TIME_WINDOW_AGE_S, print_report, read_lines

    settings = _settings()
    configure_logging("INFO" if verbose else "WARNING", settings.log_format)
    path = path or BUNDLED_SAMPLE
    if not path.exists():
        raise click.BadParameter(f"no such file: {path} (generate one with "
                                 "`python -m streamer.devtools.synthetic`)", param_hint="PATH")
    lines = read_lines(path)
    if not model_url and settings.quality.judge_model is None and not settings.quality.judge_urls:
        # the demo's judge is the CPU baseline: free, so every window gets its no-summary twin
        settings = settings.model_copy(update={"quality": settings.quality.model_copy(
            update={"baseline_rate": 1.0})})
    model = build_model(settings, base_urls=[model_url]) if model_url else baseline_model()
    store = demo_store(sqlite)
    run = build_replay(settings, store=store, model=model, window_events=window_events,
                       window_age_s=EVENT_TIME_WINDOW_AGE_S if window_age_s is None
                       else window_age_s)

    async def go() -> Any:
        try:
            return await run.run(lines, progress=not no_progress)
        finally:
            await model.aclose()

    report = asyncio.run(go())
    print_report(report, engine=model.name, store=sqlite, users=users)


@cli.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--engine", type=click.Choice(["pool", "vllm"]), default="pool", show_default=True,
              help="pool: the STREAMER_MODEL__* endpoints; vllm: in-process engine (gpu extra).")
@click.option("--tensor-parallel-size", type=click.IntRange(min=1), default=1, show_default=True)
@_age_option
@click.option("--publish", is_flag=True,
              help="Also publish change events to STREAMER_KAFKA__OUTPUT_TOPIC.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@_errors
def backfill(path: Path, engine: str, tensor_parallel_size: int, window_age_s: float | None,
             publish: bool, no_progress: bool) -> None:
    """Build summaries from a JSONL history file (the input topic's format) into the configured
    store, as the stream does."""
    from ..app import build_backfill
    from .replay import EVENT_TIME_WINDOW_AGE_S, read_lines

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    lines = read_lines(path)
    job = build_backfill(settings, engine=engine, tensor_parallel_size=tensor_parallel_size,
                         publish=publish, window_age_s=EVENT_TIME_WINDOW_AGE_S
                         if window_age_s is None else window_age_s)

    async def go() -> Any:
        try:
            return await job.replay.run(lines, progress=not no_progress)
        finally:
            await job.aclose()

    report = asyncio.run(go())
    click.echo(f"backfilled {report.users} users from {report.events} records -> "
               f"{len(report.changes)} versions; outcomes {dict(report.outcomes)}; "
               f"invalid {dict(report.invalid)}")
    if report.outcomes.get("failed") or report.outcomes.get("parked"):
        sys.exit(EX_FAILED)


@cli.command(name="eval")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--summarizer-url", help="OpenAI-compatible base URL serving AlignXplore+.")
@click.option("--summarizer-model", default="VanillaH1/AlignXplore-Plus", show_default=True)
@click.option("--judge-url", default="http://127.0.0.1:8001/v1", show_default=True,
              help="OpenAI-compatible base URL of the downstream judge.")
@click.option("--judge-model", default="Qwen/Qwen3-8B", show_default=True)
@click.option("--baseline", is_flag=True,
              help="Also score the CPU baseline summarizer (always on without a summarizer).")
@click.option("--dataset", help="Dataset name for the stage split (default: the file stem; "
                                "amazon*/mind*/movielens* use thirds).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write per-user results as JSON.")
@click.option("--make-synthetic", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="Write the synthetic set and exit.")
@_errors
def evaluate(path: Path | None, summarizer_url: str | None, summarizer_model: str,
             judge_url: str, judge_model: str, baseline: bool, dataset: str | None,
             out: Path | None, make_synthetic: Path | None) -> None:
    """The paper's evaluation: streaming summaries, then the pairwise judgement (accuracy, AUC)."""
    from ..app import build_eval
    from ..evaluation.benchmark import BUNDLED_SYNTHETIC, load_benchmark, synthetic_benchmark

    settings = _settings()
    configure_logging("WARNING", settings.log_format)

    if make_synthetic:
        rows = synthetic_benchmark()
        make_synthetic.write_text("".join(json.dumps(r) + "\n" for r in rows))
        click.echo(f"wrote {len(rows)} users to {make_synthetic}")
        return
    path = path or BUNDLED_SYNTHETIC
    records = load_benchmark(path)
    run = build_eval(settings, summarizer_url=summarizer_url, summarizer_model=summarizer_model,
                     judge_url=judge_url, judge_model=judge_model, baseline=baseline)
    reports = asyncio.run(run.run(records, dataset=dataset or path.stem))
    for report in reports:
        click.echo(f"{report.engine:32s} users={report.users} accuracy={report.accuracy:.3f} "
                   f"auc={'n/a' if report.auc is None else f'{report.auc:.3f}'} "
                   f"unparsed={report.unparsed} failed_summaries={report.failed_summaries}")
    if out:
        out.write_text(json.dumps([r.headline() | {"rows": r.rows} for r in reports], indent=2,
                                  ensure_ascii=False))


# --- provisioning --------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per endpoint.")
@click.option("--no-sampling", is_flag=True,
              help="Skip the 1-token chat call that checks the sampling fields.")
@_errors
def doctor(as_json: bool, no_sampling: bool) -> None:
    """Check every model endpoint: engine, model, context, sampling, token counting, load.

    Exit 0 when all are fine, 2 when one is misconfigured (the message says what to change),
    69 when one cannot be reached."""
    from ..app import check_model_pool

    settings = _settings()
    configure_logging("CRITICAL", settings.log_format)  # the report says it all
    if settings.model.engine != "openai":
        click.echo(f"STREAMER_MODEL__ENGINE={settings.model.engine}: no model endpoint to check")
        return
    reports = asyncio.run(check_model_pool(settings, probe_sampling=not no_sampling))
    for r in reports:
        if as_json:
            click.echo(json.dumps(r.as_dict()))
            continue
        state = "ok" if r.ok else "PROBLEM" if r.reachable else "UNREACHABLE"
        click.echo(f"{r.base_url}  {state}")
        if r.reachable:
            click.echo(f"  engine    {r.engine}\n  models    {', '.join(r.models) or '-'}\n"
                       f"  context   {r.context if r.context is not None else 'not reported'}"
                       f" (STREAMER_MODEL__CONTEXT_TOKENS={settings.model.context_tokens})\n"
                       f"  sampling  {r.sampling}\n  tokenize  {r.tokenize}\n  load      {r.load}")
        for line in ([r.error] if r.error else []) + r.problems:
            click.echo(f"  ! {line}")
    if any(r.problems for r in reports):
        sys.exit(EX_USAGE)
    if not all(r.reachable for r in reports):
        sys.exit(EX_UNAVAILABLE)


@cli.command()
@_errors
def migrate() -> None:
    """Create the keyspace and apply pending CQL migrations."""
    from ..app import migrate_schema

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    applied = migrate_schema(settings)
    click.echo(f"applied: {', '.join(applied) or 'nothing (schema up to date)'}")


@cli.command()
@click.argument("action", type=click.Choice(["ensure"]))
@_errors
def topics(action: str) -> None:
    """Create the input, output, dead-letter and failure topics; report mismatches (exit 3)."""
    from ..app import provision_topics

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    for line in asyncio.run(provision_topics(settings)):
        click.echo(line)


# --- reads and operations ------------------------------------------------------------------


def _read(user_id: str, history: bool) -> None:
    from ..app import build_store

    settings = _settings()
    configure_logging("WARNING", settings.log_format)

    async def go() -> Any:
        store = build_store(settings)
        try:
            if not history:
                record = await store.get_current(user_id)
                return record.model_dump(mode="json") if record else None
            return [r.model_dump(mode="json") for r in await store.history(user_id)]
        finally:
            await store.aclose()

    result = asyncio.run(go())
    if not result:
        click.echo(f"no summary for user {user_id!r}", err=True)
        sys.exit(EX_FAILED)
    click.echo(json.dumps(result, indent=2, ensure_ascii=False))


@cli.command()
@click.argument("user_id")
@_errors
def get(user_id: str) -> None:
    """Print a user's current summary as JSON (exit 1 when there is none)."""
    _read(user_id, history=False)


@cli.command()
@click.argument("user_id")
@_errors
def history(user_id: str) -> None:
    """Print a user's full history, oldest first, as JSON (exit 1 when there is none)."""
    _read(user_id, history=True)


@cli.command()
@click.argument("user_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--suppress-s", type=click.FloatRange(min=0), default=None,
              help="Drop the user's events in flight for this long.  "
                   "[default: STREAMER_FORGET__SUPPRESS_S]")
@_errors
def forget(user_id: str, yes: bool, suppress_s: float | None) -> None:
    """Delete a user everywhere (the right to be forgotten): every version, the current row,
    the applied-event index, pending and parked windows; then publish a deletion event and a
    tombstone on the summaries topic.  Safe to run again."""
    from ..app import build_buffer, build_sender, build_store, change_publisher
    from ..services.forget import forget_user

    settings = _settings()
    configure_logging("WARNING", settings.log_format)
    if not yes:
        click.confirm(f"Delete user {user_id!r} and all of its data?", abort=True, err=True)

    async def go() -> dict[str, object]:
        store = build_store(settings)
        buffer = build_buffer(settings, store)
        sender = build_sender(settings)
        try:
            report = await forget_user(
                store, buffer, change_publisher(settings, sender), user_id,
                suppress_s=settings.forget.suppress_s if suppress_s is None else suppress_s,
                now=datetime.now(UTC))
            return report.as_dict()
        finally:
            await sender.aclose()
            await store.aclose()

    click.echo(json.dumps(asyncio.run(go())))


@cli.command()
@click.argument("action", type=click.Choice(["list", "retry", "drop"]))
@click.argument("user_id", required=False)
@click.option("--window-id", help="Only this window.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@_errors
def parked(action: str, user_id: str | None, window_id: str | None, limit: int) -> None:
    """Windows parked after bounded attempts: list them, retry them (re-produce their original
    records to the input topic, then unpark) or drop them."""
    from ..app import build_buffer, build_sender, build_store

    settings = _settings()
    configure_logging("WARNING", settings.log_format)

    async def go() -> int:
        store = build_store(settings)
        buffer = build_buffer(settings, store)
        sender = build_sender(settings)
        try:
            windows = await buffer.parked(user_id, limit=limit)
            if window_id:
                windows = [w for w in windows if w.window_id == window_id]
            if action == "list":
                for w in windows:
                    click.echo(json.dumps({
                        "user_id": w.user_id, "window_id": w.window_id,
                        "partition": w.partition, "error_type": w.error_type,
                        "reason": w.reason, "attempts": w.attempts,
                        "parked_at": w.parked_at, "event_ids": [e.event_id for e in w.entries],
                    }, ensure_ascii=False))
                click.echo(f"{len(windows)} parked window(s)", err=True)
                return 0
            if not windows:
                click.echo("no parked window matches (give USER_ID and optionally --window-id)",
                           err=True)
                return EX_FAILED
            for w in windows:
                if action == "retry":
                    for e in w.entries:
                        await sender.send(settings.kafka.input_topic, w.user_id.encode(),
                                          e.value, ())
                await buffer.unpark(w.user_id, w.window_id)
                click.echo(f"retried {w.user_id}/{w.window_id}: {len(w.entries)} records "
                           f"re-produced to {settings.kafka.input_topic}" if action == "retry"
                           else f"dropped {w.user_id}/{w.window_id} ({len(w.entries)} events)")
            return 0
        finally:
            await sender.aclose()
            await store.aclose()

    code = asyncio.run(go())
    if code:
        sys.exit(code)


# --- quality reports and training export ---------------------------------------------------


class _IsoTime(click.ParamType):
    """An ISO 8601 date or datetime; without a timezone it is UTC."""

    name = "ISO-TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not an ISO date or datetime (e.g. 2026-06-01T12:00Z)",
                      param, ctx)
        return when if when.tzinfo else when.replace(tzinfo=UTC)


def _scan_options(fn: F) -> F:
    for option in reversed([
        click.option("--user", "users", multiple=True, metavar="ID",
                     help="Only this user (repeatable)."),
        click.option("--user-prefix", help="Only users whose id starts with this."),
        click.option("--since", type=_IsoTime(), help="Only versions created at or after this "
                                                      "(ISO; UTC without a timezone)."),
        click.option("--until", type=_IsoTime(), help="Only versions created before this."),
        click.option("--no-progress", is_flag=True, help="No progress bar."),
    ]):
        fn = option(fn)
    return fn


async def _scan(settings: Settings, each: Callable[[Any], None], *, progress: bool) -> None:
    """Feed every stored version of the configured store to ``each`` (tqdm on stderr)."""
    from tqdm import tqdm

    from ..app import build_store

    store = build_store(settings)
    try:
        with tqdm(desc="scanning", unit="ver", disable=not progress, file=sys.stderr) as bar:
            async for record in store.scan_history():
                each(record)
                bar.update()
    finally:
        await store.aclose()


@cli.command()
@_scan_options
@click.option("--model", help="Only versions written by this summarizer model.")
@click.option("--judge", help="Only scores given by this judge.")
@click.option("--bucket", type=click.Choice(["hour", "day", "week"]), default="day",
              show_default=True, help="Accuracy over time: bucket of created_at (UTC).")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
@click.option("--plots", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Also write PNG plots here (needs matplotlib: the bench extra).")
@_errors
def quality(users: tuple[str, ...], user_prefix: str | None, since: datetime | None,
            until: datetime | None, no_progress: bool, model: str | None, judge: str | None,
            bucket: str, as_json: bool, plots: Path | None) -> None:
    """Report the stored quality scores: accuracy overall, over time, against summary age and
    window size, the lift over no summary, and the judge's cost (exit 1 when nothing is
    scored)."""
    from ..evaluation.quality_report import (
        MATPLOTLIB_MISSING,
        Cohort,
        QualityReport,
        format_report,
        write_plots,
    )

    settings = _settings()
    configure_logging("WARNING", settings.log_format)
    cohort = Cohort(users=frozenset(users), user_prefix=user_prefix, model=model, judge=judge,
                    since=since, until=until)
    report = QualityReport(cohort=cohort, bucket=bucket)  # type: ignore[arg-type]
    asyncio.run(_scan(settings, report.add, progress=not no_progress))
    if not report.versions:
        click.echo("the store holds no summary versions: nothing to report", err=True)
        sys.exit(EX_FAILED)
    if not report.scored:
        click.echo(f"no scored version among the {report.in_cohort} versions of the cohort "
                   f"({report.versions} scanned): scores need STREAMER_QUALITY__SAMPLE_RATE > 0 "
                   "and a judge", err=True)
        sys.exit(EX_FAILED)
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else format_report(report))
    if plots:
        made = write_plots(report, plots)
        if made is None:
            click.echo(MATPLOTLIB_MISSING, err=True)
        else:
            click.echo(f"wrote {len(made)} plots: {', '.join(map(str, made))}", err=True)


@cli.command(name="export")
@click.argument("out", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
                metavar="OUT.jsonl|-")
@_scan_options
@click.option("--history", is_flag=True,
              help="Every version (what import-summaries restores), not only current ones.")
@_errors
def export(out: Path, users: tuple[str, ...], user_prefix: str | None, since: datetime | None,
           until: datetime | None, no_progress: bool, history: bool) -> None:
    """Write stored summaries as JSONL, one stored version per line: each user's current one,
    or (--history) all of them; filtered by users and created_at."""
    from tqdm import tqdm

    from ..app import build_store
    from ..evaluation.quality_report import Cohort
    from ..services.portability import export_records

    settings = _settings()
    configure_logging("WARNING", settings.log_format)
    cohort = Cohort(users=frozenset(users), user_prefix=user_prefix, since=since, until=until)
    to_stdout = str(out) == "-"
    partial = out.with_name(out.name + ".partial")  # OUT appears only when complete

    async def go() -> int:
        store = build_store(settings)
        written = 0
        f = sys.stdout if to_stdout else partial.open("w", encoding="utf-8")
        try:
            with tqdm(desc="exporting", unit="ver", disable=no_progress, file=sys.stderr) as bar:
                async for record in export_records(store, history=history, admits=cohort.admits):
                    f.write(record.model_dump_json() + "\n")
                    written += 1
                    bar.update()
        finally:
            if not to_stdout:
                f.close()
            await store.aclose()
        return written

    try:
        written = asyncio.run(go())
    except BaseException:
        if not to_stdout:
            partial.unlink(missing_ok=True)
        raise
    if not to_stdout:
        partial.replace(out)
    click.echo(f"exported {written} version(s){' (full history)' if history else ''}"
               f"{'' if to_stdout else f' to {out}'}", err=True)


@cli.command(name="import-summaries")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                metavar="EXPORT.jsonl")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@_errors
def import_summaries(path: Path, no_progress: bool) -> None:
    """Restore a full-history export (streamer export --history) into the store: versions,
    created_at and event ids preserved; users the store already has are skipped (exit 1)."""
    from tqdm import tqdm

    from ..app import build_store
    from ..services.portability import import_records, read_export

    settings = _settings()
    configure_logging("WARNING", settings.log_format)

    async def go() -> Any:
        store = build_store(settings)
        try:
            with path.open(encoding="utf-8") as f, tqdm(
                    desc="importing", unit="ver", disable=no_progress, file=sys.stderr) as bar:
                return await import_records(store, read_export(f), on_version=bar.update)
        finally:
            await store.aclose()

    report = asyncio.run(go())
    click.echo(json.dumps(report.as_dict()))
    if report.skipped_existing:
        click.echo(f"skipped {len(report.skipped_existing)} user(s) the store already has, e.g. "
                   f"{report.skipped_existing[0]!r} (import restores into an empty store)",
                   err=True)
        sys.exit(EX_FAILED)


@cli.command(name="rebuild-current")
@click.option("--topic", help="The compacted summaries topic.  [default: "
                              "STREAMER_KAFKA__OUTPUT_TOPIC]")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@_errors
def rebuild_current_rows(topic: str | None, no_progress: bool) -> None:
    """Restore current versions from the compacted summaries topic (read from its beginning to
    the end offsets at start): each user's latest version, where the store lost it (a stored
    version is never overwritten); deleted users are deleted."""
    from tqdm import tqdm

    from ..adapters.kafka.topic_reader import read_topic
    from ..app import build_store
    from ..services.portability import rebuild_current

    settings = _settings()
    configure_logging("WARNING", settings.log_format)

    async def go() -> Any:
        store = build_store(settings)
        try:
            with tqdm(desc="rebuilding", unit="rec", disable=no_progress, file=sys.stderr) as bar:
                return await rebuild_current(store, read_topic(
                    settings.kafka, topic or settings.kafka.output_topic,
                    on_record=bar.update))
        finally:
            await store.aclose()

    click.echo(json.dumps(asyncio.run(go()).as_dict()))


@cli.command(name="import")
@click.argument("dataset", type=click.Choice(["mind", "movielens", "amazon"]))
@click.argument("paths", nargs=2, type=click.Path(exists=True, dir_okay=False, path_type=Path),
                metavar="EVENTS ITEMS")
@click.option("--out", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="Write the events as JSONL (for streamer replay / backfill).")
@click.option("--to", "target", type=click.Choice(["kafka"]),
              help="Produce the events to STREAMER_KAFKA__INPUT_TOPIC, keyed by user id.")
@click.option("--ids-only", is_flag=True,
              help="Events name their items by id only; the items go out as catalog records: "
                   "first in the --out file, or to STREAMER_CATALOG__TOPIC with --to kafka.")
@click.option("--catalog-out", type=click.Path(dir_okay=False, path_type=Path),
              help="With --ids-only: write the catalog records to this JSONL file instead "
                   "(load it later with `streamer catalog load`).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True),
              help="With --to kafka: at most this many events per second.")
@click.option("--speedup", type=click.FloatRange(min=0, min_open=True),
              help="With --to kafka: replay event time this many times faster than real time.")
@click.option("--seed", type=int, default=7, show_default=True,
              help="Seed of the random negatives (reproducible).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@_errors
def import_dataset(dataset: str, paths: tuple[Path, Path], out: Path | None, target: str | None,
                   ids_only: bool, catalog_out: Path | None, rate: float | None,
                   speedup: float | None, seed: int, no_progress: bool) -> None:
    """Convert a public dataset, as published, into interaction events (paper conventions):
    MIND behaviors.tsv news.tsv, MovieLens ratings.csv movies.csv, Amazon Reviews 2023
    REVIEWS.jsonl meta_CATEGORY.jsonl.  Events come out in timestamp order, items inline
    (or by id, with the items as catalog records: --ids-only)."""
    import time as _time

    from ..domain import importers

    if (out is None) == (target is None):
        raise click.UsageError("give exactly one of --out FILE.jsonl and --to kafka")
    if (rate or speedup) and target is None:
        raise click.UsageError("--rate and --speedup pace --to kafka only")
    if rate and speedup:
        raise click.UsageError("give --rate or --speedup, not both")
    if catalog_out is not None and not ids_only:
        raise click.UsageError("--catalog-out goes with --ids-only")
    settings = _settings()
    configure_logging("WARNING", settings.log_format)
    convert = {"mind": importers.mind, "movielens": importers.movielens,
               "amazon": importers.amazon}[dataset]
    with paths[0].open(encoding="utf-8", newline="") as events_file, \
            paths[1].open(encoding="utf-8", newline="") as items_file:
        result = convert(events_file, items_file, seed=seed)
    click.echo(f"{dataset}: {len(result.events)} events of {result.users} users over "
               f"{result.items} items ({result.skipped} records skipped: unknown item or no "
               "negative)", err=True)
    events = result.by_id() if ids_only else result.events
    catalog = list(result.catalog) if ids_only else []
    if catalog_out is not None:
        with _progress(len(catalog), "catalog", no_progress) as bar:
            _write_jsonl(catalog_out, catalog, bar)
        click.echo(f"wrote {len(catalog)} catalog records to {catalog_out}", err=True)
        catalog = []
    if out is not None:
        with _progress(len(catalog) + len(events), "importing", no_progress) as bar:
            _write_jsonl(out, [*catalog, *events], bar)
        return

    from ..app import build_sender

    async def produce() -> None:
        sender = build_sender(settings)
        try:
            if catalog:
                with _progress(len(catalog), "catalog", no_progress) as bar:
                    await _send_catalog(sender, settings.catalog.topic,
                                        [(c.item.id, c) for c in catalog], bar)
            with _progress(len(events), "importing", no_progress) as bar:
                start = _time.monotonic()
                t0 = events[0].occurred_at if events else None
                for n, event in enumerate(events):
                    if rate:
                        due = start + n / rate
                    elif speedup and t0 is not None:
                        due = start + (event.occurred_at - t0).total_seconds() / speedup
                    else:
                        due = 0.0
                    if due > _time.monotonic():
                        await asyncio.sleep(due - _time.monotonic())
                    await sender.send(settings.kafka.input_topic, event.user_id.encode(),
                                      event.model_dump_json().encode(), ())
                    bar.update()
        finally:
            await sender.aclose()

    asyncio.run(produce())
    if catalog:
        click.echo(f"produced {len(catalog)} catalog records to {settings.catalog.topic}",
                   err=True)
    click.echo(f"produced {len(events)} events to {settings.kafka.input_topic}", err=True)


def _progress(total: int, desc: str, disabled: bool) -> Any:
    from tqdm import tqdm

    unit = "item" if desc == "catalog" else "ev"
    return tqdm(total=total, desc=desc, unit=unit, disable=disabled, file=sys.stderr)


def _write_jsonl(path: Path, records: Sequence[Any], bar: Any) -> None:
    """One JSON line per record to ``path`` (``-``: stdout)."""
    f = sys.stdout if str(path) == "-" else path.open("w", encoding="utf-8")
    try:
        for record in records:
            f.write(record.model_dump_json() + "\n")
            bar.update()
    finally:
        if f is not sys.stdout:
            f.close()


async def _send_catalog(sender: Any, topic: str, records: Sequence[Any], bar: Any) -> None:
    """Catalog records to the compacted catalog topic, keyed by item id (None: a tombstone)."""
    for item_id, record in records:
        await sender.send(topic, item_id.encode(),
                          None if record is None else record.model_dump_json().encode(), ())
        bar.update()


@cli.group()
def catalog() -> None:
    """The item catalog topic (STREAMER_CATALOG__TOPIC): items that events name by id."""


@catalog.command(name="load")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, allow_dash=True,
                                        path_type=Path), metavar="FILE.jsonl")
@click.option("--topic", help="The catalog topic.  [default: STREAMER_CATALOG__TOPIC]")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@_errors
def catalog_load(path: Path, topic: str | None, no_progress: bool) -> None:
    """Publish catalog records (JSONL of `catalog.item` records, e.g. from `streamer import
    --ids-only`), keyed by item id.  Lines of other types are passed over; an invalid catalog
    line is reported with its number and nothing is published (exit 1)."""
    from ..domain.catalog import decode_catalog_item

    settings = _settings()
    configure_logging("WARNING", settings.log_format)
    topic = topic or settings.catalog.topic
    records, other, problems = [], 0, []
    with (sys.stdin if str(path) == "-" else path.open(encoding="utf-8")) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError as exc:
                problems.append(f"line {n}: not JSON ({exc})")
                continue
            if not isinstance(doc, dict) or doc.get("type") != "catalog.item":
                other += 1
                continue
            try:
                record = decode_catalog_item(line)
            except InvalidEventError as exc:
                problems.append(f"line {n}: {exc}")
                continue
            records.append((record.item.id, record))
    if problems:
        click.echo(f"{len(problems)} invalid catalog line(s), nothing published:\n  "
                   + "\n  ".join(problems[:20]), err=True)
        sys.exit(EX_FAILED)

    from ..app import build_sender

    async def produce() -> None:
        sender = build_sender(settings)
        try:
            with _progress(len(records), "catalog", no_progress) as bar:
                await _send_catalog(sender, topic, records, bar)
        finally:
            await sender.aclose()

    asyncio.run(produce())
    click.echo(f"published {len(records)} items to {topic}"
               + (f" ({other} lines of other types passed over)" if other else ""), err=True)


@catalog.command(name="delete")
@click.argument("item_ids", nargs=-1, required=True, metavar="ITEM_ID...")
@click.option("--topic", help="The catalog topic.  [default: STREAMER_CATALOG__TOPIC]")
@_errors
def catalog_delete(item_ids: tuple[str, ...], topic: str | None) -> None:
    """Delete items from the catalog: a tombstone (null value) per item id."""
    settings = _settings()
    configure_logging("WARNING", settings.log_format)
    topic = topic or settings.catalog.topic

    from ..app import build_sender

    async def produce() -> None:
        sender = build_sender(settings)
        try:
            with _progress(len(item_ids), "catalog", True) as bar:
                await _send_catalog(sender, topic, [(i, None) for i in item_ids], bar)
        finally:
            await sender.aclose()

    asyncio.run(produce())
    click.echo(f"deleted {len(item_ids)} items from {topic}", err=True)


@cli.group()
def mapping() -> None:
    """Mapping files: records of an existing format (Segment, Snowplow, your JSON) to events."""


@mapping.command(name="check")
@click.argument("mapping_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                metavar="MAPPING.yaml")
@click.argument("sample", type=click.Path(exists=True, dir_okay=False, allow_dash=True,
                                          path_type=Path), metavar="SAMPLE.jsonl")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per sample record.")
@_errors
def mapping_check(mapping_file: Path, sample: Path, as_json: bool) -> None:
    """Show what each sample record becomes, or why it would be dead-lettered (exit 1 when
    any would be).  The same conversion and validation as the worker, without the event-age
    checks."""
    from collections import Counter

    from ..app import load_mapping

    m = load_mapping(str(mapping_file))
    failed: Counter[str] = Counter()
    total = 0
    with (sys.stdin if str(sample) == "-" else sample.open(encoding="utf-8")) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            total += 1
            try:
                _, event = m.decode(None, line.encode())
            except InvalidEventError as exc:
                failed[exc.code] += 1
                out = {"line": n, "ok": False, "error_type": exc.code, "reason": str(exc)}
                click.echo(json.dumps(out) if as_json
                           else f"line {n}: DEAD-LETTERED {exc.code}: {exc}")
                continue
            doc = json.loads(event.model_dump_json(exclude_defaults=True))
            if as_json:
                click.echo(json.dumps({"line": n, "ok": True, "event": doc}))
            else:
                click.echo(f"line {n}: {event.type} user={event.user_id} event={event.event_id}"
                           f"\n  {json.dumps(doc, ensure_ascii=False)}")
    ok = total - sum(failed.values())
    summary = f"{m.name}: {ok} of {total} records convert"
    if failed:
        summary += "; dead-lettered: " + ", ".join(f"{k} {v}" for k, v in failed.most_common())
    click.echo(summary, err=True)
    if failed:
        sys.exit(EX_FAILED)


@cli.command(name="export-training")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path), metavar="OUT.jsonl")
@_scan_options
@click.option("--scored-only", is_flag=True, help="Only versions whose window was scored.")
@click.option("--min-pairs", type=click.IntRange(min=0), default=0, show_default=True,
              help="Only windows with at least this many pairwise choices.")
@_errors
def export_training(out: Path, users: tuple[str, ...], user_prefix: str | None,
                    since: datetime | None, until: datetime | None, no_progress: bool,
                    scored_only: bool, min_pairs: int) -> None:
    """Write (previous summary, window triples, score, summary, next score) training records,
    one JSON line per version with a previous version (exit 1 when none is written)."""
    from ..evaluation.quality_report import NO_TRIPLES_HINT, Cohort, ExportStats, training_records

    settings = _settings()
    configure_logging("WARNING", settings.log_format)
    cohort = Cohort(users=frozenset(users), user_prefix=user_prefix, since=since, until=until)
    records: list[Any] = []
    scanned = 0

    def keep(record: Any) -> None:  # the cohort's users, all their versions (for the pairing)
        nonlocal scanned
        scanned += 1
        if cohort.admits_user(record.user_id):
            records.append(record)

    asyncio.run(_scan(settings, keep, progress=not no_progress))
    stats = ExportStats()
    partial = out.with_name(out.name + ".partial")  # OUT appears only when complete
    try:
        with partial.open("w", encoding="utf-8") as f:
            for line in training_records(records, cohort, scored_only=scored_only,
                                         min_pairs=min_pairs, stats=stats):
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    skipped = stats.skipped()
    if skipped:
        click.echo("skipped: " + ", ".join(f"{k.replace('_', ' ')} {v}"
                                           for k, v in skipped.items()), err=True)
    if stats.no_triples:
        click.echo(f"{stats.no_triples} version(s) without stored triples ({NO_TRIPLES_HINT})",
                   err=True)
    if not stats.written:
        partial.unlink()
        click.echo(f"no training record written ({scanned} versions scanned)", err=True)
        sys.exit(EX_FAILED)
    partial.replace(out)
    click.echo(f"wrote {stats.written} training records to {out}")


# --- capacity planning ---------------------------------------------------------------------


def plan_inputs(settings: Settings, **given: Any) -> Any:
    """:class:`~streamer.domain.capacity.PlanInputs` from the configured ``STREAMER_*`` settings
    and the given values (``None`` values are left to the settings or the planner's defaults)."""
    from ..domain.capacity import PlanInputs

    values: dict[str, Any] = {
        "window_max_age_s": settings.window.max_age_s,
        "window_max_events": settings.window.max_events,
        "window_max_tokens": settings.window.max_tokens,
        "window_min_interval_s": settings.window.min_interval_s,
        "model_max_tokens": settings.model.max_tokens,
        "context_tokens": settings.model.context_tokens,
        "model_max_concurrency": settings.model.max_concurrency,
        "max_concurrency_per_endpoint": settings.model.max_concurrency_per_endpoint,
        "quality_sample_rate": settings.quality.sample_rate,
        "quality_baseline_rate": settings.quality.baseline_rate,
        "quality_max_pairs": settings.quality.max_pairs,
        "keep_triples": settings.quality.keep_triples,
        "dedupe_ttl_s": settings.cassandra.dedupe_ttl_s,
    }
    values.update({k: v for k, v in given.items() if v is not None})
    return PlanInputs(**values)


def _plan_value(value: float, unit: str) -> str:
    from ..domain.capacity import human_bytes, n

    if unit.startswith("bytes"):
        return f"{human_bytes(value)}{unit[5:]}"
    if unit == "s":
        return f"{value:.3g} s" if value >= 0.01 else f"{value * 1000:.3g} ms"
    return f"{n(round(value, 3) if value >= 1 else value)} {unit}"


@cli.command(name="plan")
@click.option("--users", type=click.IntRange(min=1), required=True, help="Daily active users.")
@click.option("--events-per-user-day", type=click.FloatRange(min=0, min_open=True), required=True,
              help="Interaction events per active user per day.")
@click.option("--window-max-age", "window_max_age_s", type=click.FloatRange(min=0),
              help="Window max age, seconds.  [default: STREAMER_WINDOW__MAX_AGE_S]")
@click.option("--reasoning-tokens", type=click.IntRange(min=0), required=True,
              help="Thinking tokens per update (mean), before the summary.")
@click.option("--gpu", type=click.Choice(list(GPUS)), required=True,
              help="GPU of the vLLM pool (one model replica per GPU).")
@click.option("--window-max-events", type=click.IntRange(min=1),
              help="Events per window.  [default: STREAMER_WINDOW__MAX_EVENTS]")
@click.option("--active-hours", type=click.FloatRange(0, 24, min_open=True),
              default=plan_default("active_hours"), show_default=True,
              help="Hours of the day a user's events are spread over (Poisson).")
@click.option("--peak-to-mean", type=click.FloatRange(min=1), default=plan_default("peak_to_mean"),
              show_default=True, help="Peak-hour load / daily mean.")
@click.option("--target-utilisation", type=click.FloatRange(0, 1, min_open=True),
              default=plan_default("target_utilisation"), show_default=True,
              help="Share of GPU and worker capacity used at peak.")
@click.option("--summary-tokens", type=click.FloatRange(min=0),
              default=plan_default("summary_tokens"), show_default=True,
              help="Tokens of a summary (the previous one in the prompt, the new one written).")
@click.option("--tokens-per-event", type=click.FloatRange(min=0, min_open=True),
              default=plan_default("tokens_per_event"), show_default=True,
              help="Prompt tokens per event (measured on the bundled clickstream).")
@click.option("--event-bytes", type=click.FloatRange(min=1), default=plan_default("event_bytes"),
              show_default=True, help="Bytes of one input record.")
@click.option("--kafka-retention-days", type=click.FloatRange(min=0, min_open=True),
              default=plan_default("kafka_retention_days"), show_default=True,
              help="Input topic retention, days (Kafka's default).")
@click.option("--kafka-replication", type=click.IntRange(min=1),
              default=plan_default("kafka_replication"), show_default=True,
              help="Kafka replication factor (the chart's).")
@click.option("--cassandra-replication", type=click.IntRange(min=1),
              default=plan_default("cassandra_replication"), show_default=True,
              help="Cassandra replication factor (the chart's).")
@click.option("--history-days", type=click.FloatRange(min=0, min_open=True),
              default=plan_default("history_days"), show_default=True,
              help="Days of summary history to size the store for.")
@click.option("--gpu-efficiency", type=click.FloatRange(min=0, min_open=True),
              default=plan_default("gpu_efficiency"), show_default=True,
              help="Scale on the GPU efficiencies fitted on published TensorRT-LLM figures.")
@click.option("--bench", "bench_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A `make bench` results JSON (bench/results/full.json format) whose ratios "
                   "replace the recorded ones.")
@click.option("--json", "as_json", is_flag=True, help="The plan as one JSON object.")
@_errors
def plan_command(users: int, events_per_user_day: float, window_max_age_s: float | None,
                 reasoning_tokens: int, gpu: str, window_max_events: int | None,
                 active_hours: float, peak_to_mean: float, target_utilisation: float,
                 summary_tokens: float, tokens_per_event: float, event_bytes: float,
                 kafka_retention_days: float, kafka_replication: int,
                 cassandra_replication: int, history_days: float, gpu_efficiency: float,
                 bench_file: Path | None, as_json: bool) -> None:
    """Size a deployment: model calls, GPUs, workers, Kafka, the buffer, Cassandra, freshness.

    Every number comes with its formula.  Window rules, model limits and concurrency are the
    configured STREAMER_* settings unless given here; the bench ratios are those of
    bench/results/full.json unless --bench names another results file."""
    from ..domain.capacity import DEFAULT_BENCH, bench_from_results, plan

    settings = _settings()
    bench = DEFAULT_BENCH
    if bench_file is not None:
        try:
            doc = json.loads(bench_file.read_text())
        except (OSError, ValueError) as exc:
            raise click.BadParameter(f"cannot read {bench_file}: {exc}",
                                     param_hint="--bench") from exc
        bench, taken = bench_from_results(doc, name=str(bench_file), fallback=DEFAULT_BENCH)
        if not taken:
            raise click.BadParameter(f"{bench_file} holds none of the measurements the plan uses "
                                     "(is it a bench/results/*.json file?)", param_hint="--bench")
    try:
        inputs = plan_inputs(
            settings, users=users, events_per_user_day=events_per_user_day,
            window_max_age_s=window_max_age_s, reasoning_tokens=reasoning_tokens, gpu=gpu,
            window_max_events=window_max_events, active_hours=active_hours,
            peak_to_mean=peak_to_mean, target_utilisation=target_utilisation,
            summary_tokens=summary_tokens, tokens_per_event=tokens_per_event,
            event_bytes=event_bytes, kafka_retention_days=kafka_retention_days,
            kafka_replication=kafka_replication, cassandra_replication=cassandra_replication,
            history_days=history_days, gpu_efficiency=gpu_efficiency, bench=bench)
        result = plan(inputs)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2, default=str))
        return
    columns = shutil.get_terminal_size((120, 24)).columns
    i = result.inputs
    click.echo(textwrap.fill(
        f"capacity plan: {i.users:,} users × {i.events_per_user_day:g} events/user-day over "
        f"{i.active_hours:g} h; windows of {i.window_max_events} events / {i.window_max_age_s:g} s; "
        f"{i.reasoning_tokens} reasoning tokens; {GPUS[gpu].name}; utilisation "
        f"{i.target_utilisation:g} at a peak of {i.peak_to_mean:g} × the mean", columns))
    width = max(len(r.quantity) for r in result.rows)
    values = {r.key: _plan_value(r.value, r.unit) for r in result.rows}
    vwidth = max(len(v) for v in values.values())
    indent = width + vwidth + 4
    wrap = max(40, columns - indent)
    click.echo(f"\n{'quantity'.ljust(width)}  {'value'.rjust(vwidth)}  formula")
    section = None
    for row in result.rows:
        if row.section != section:
            section = row.section
            click.echo(f"-- {section} --")
        lines = textwrap.wrap(row.formula, wrap, break_on_hyphens=False) or [""]
        click.echo(f"{row.quantity.ljust(width)}  {values[row.key].rjust(vwidth)}  {lines[0]}")
        for line in lines[1:]:
            click.echo(" " * indent + line)
    for warning in result.warnings:
        click.echo(textwrap.fill(f"warning: {warning}", columns, subsequent_indent="  "))
    click.echo("\nsources:")
    for key, source in result.sources.items():
        click.echo(textwrap.fill(f"{key}: {source}", columns, initial_indent="  ",
                                 subsequent_indent="    "))


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script: eval "$(streamer completion bash)"."""
    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(cli, {}, "streamer", "_STREAMER_COMPLETE").source())


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (``streamer`` console script and ``python -m``)."""
    try:
        cli.main(args=argv, prog_name="streamer", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
