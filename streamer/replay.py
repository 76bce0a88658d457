"""The embedded default: replay a clickstream file through the real domain code.

No Kafka, no Cassandra, no GPU: events are decoded by the same codec, windowed by the same
:class:`WindowBook` (on event time, so runs are reproducible), turned into the same AlignXplore+
prompts and versioned by the same update service into an embedded SQLite store.  The summary
engine is the CPU baseline (clearly labelled) or any OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from schemas import SummaryChanged, SummaryUpdateFailed

from .adapters.kafka.codec import decode_interaction
from .adapters.sqlite.store import SqliteProfileStore
from .domain.windowing import WindowBook
from .errors import InvalidEventError
from .ports import ChangePublisher, ProfileStore, SummaryModel
from .scheduler import Finished, WindowScheduler
from .service import ProfileUpdater, PromptCounter, UpdatePolicy
from .testing import ListPublisher

log = logging.getLogger(__name__)

BUNDLED_SAMPLE = Path(__file__).parent / "data" / "sample_clickstream.jsonl"


@dataclass
class ReplayReport:
    events: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    changes: list[SummaryChanged] = field(default_factory=list)
    users: int = 0


async def replay(
    lines: list[bytes],
    *,
    store: ProfileStore,
    model: SummaryModel,
    policy: UpdatePolicy,
    window_events: int,
    window_age_s: float,
    concurrency: int = 4,
    progress: bool = True,
    publisher: ChangePublisher | None = None,
    token_counter: PromptCounter | None = None,
) -> ReplayReport:
    """Replay raw JSONL records in order (windows on event time); returns what happened.

    Used by the embedded demo (SQLite, baseline) and by ``streamer backfill`` (the configured
    store and model): versions are written exactly as the stream worker writes them.
    """
    report = ReplayReport()
    collected = ListPublisher()
    updater = ProfileUpdater(store, model, _Tee(collected, publisher), policy,
                             token_counter=token_counter)
    clock_now = [0.0]
    book: WindowBook[None] = WindowBook(max_events=window_events, max_age_s=window_age_s)

    def finished(f: Finished[None]) -> None:
        if f.result is not None:
            report.outcomes[f.result.outcome.value] += 1
        else:
            report.outcomes["failed"] += 1

    scheduler: WindowScheduler[None] = WindowScheduler(
        book, updater, max_concurrency=concurrency, clock=lambda: clock_now[0],
        on_finished=finished,
    )
    users: set[str] = set()
    bar = tqdm(lines, desc="replaying", unit="ev", disable=not progress, file=sys.stderr)
    for raw in bar:
        report.events += 1
        try:
            event = decode_interaction(None, raw)
        except InvalidEventError as exc:
            report.invalid[exc.code] += 1
            continue
        users.add(event.user_id)
        clock_now[0] = max(clock_now[0], event.occurred_at.timestamp())
        await scheduler.tick()
        if not await scheduler.offer(event, None):
            report.duplicates += 1
        bar.set_postfix(versions=len(collected.events), refresh=False)
    await scheduler.flush()
    bar.close()
    report.changes = collected.events
    report.users = len(users)
    return report


class _Tee:
    """Keeps every change event for the report and forwards it to an optional publisher."""

    def __init__(self, collected: ListPublisher, publisher: ChangePublisher | None) -> None:
        self.collected = collected
        self.publisher = publisher

    async def publish(self, event: SummaryChanged) -> None:
        await self.collected.publish(event)
        if self.publisher is not None:
            await self.publisher.publish(event)

    async def publish_failure(self, event: SummaryUpdateFailed) -> None:
        await self.collected.publish_failure(event)
        if self.publisher is not None:
            await self.publisher.publish_failure(event)


def print_evolution(report: ReplayReport, *, users: int, out: TextIO = sys.stdout) -> None:
    """Print how the summaries of a few users evolved, version by version."""
    by_user: dict[str, list[SummaryChanged]] = {}
    for change in report.changes:
        by_user.setdefault(change.user_id, []).append(change)
    for user_id in sorted(by_user)[:users]:
        print(f"\n=== {user_id}: {len(by_user[user_id])} versions ===", file=out)
        for change in by_user[user_id]:
            text = textwrap.fill(change.summary, width=96, initial_indent="    ",
                                 subsequent_indent="    ")
            print(f"  v{change.version} ({len(change.event_ids)} events, {change.model})", file=out)
            print(text, file=out)


def run_replay(
    path: Path,
    *,
    model: SummaryModel,
    sqlite_path: str,
    policy: UpdatePolicy,
    window_events: int,
    window_age_s: float,
    show_users: int,
    progress: bool,
    out: TextIO = sys.stdout,
) -> ReplayReport:
    lines = [ln for ln in path.read_bytes().splitlines() if ln.strip()]
    if sqlite_path != ":memory:":
        Path(sqlite_path).unlink(missing_ok=True)
    store = SqliteProfileStore(sqlite_path)

    async def _run() -> ReplayReport:
        try:
            return await replay(
                lines, store=store, model=model, policy=policy, window_events=window_events,
                window_age_s=window_age_s, progress=progress,
            )
        finally:
            await model.aclose()

    report = asyncio.run(_run())
    print(f"engine: {model.name}", file=out)
    if model.name.startswith("prefstream-baseline"):
        print("NOTE: summaries below come from the deterministic CPU BASELINE (term statistics),"
              " not from the AlignXplore+ model.", file=out)
    print_evolution(report, users=show_users, out=out)
    invalid = sum(report.invalid.values())
    print(
        f"\nreplayed {report.events} records ({invalid} invalid: {dict(report.invalid)}; "
        f"{report.duplicates} duplicates) for {report.users} users -> "
        f"{len(report.changes)} summary versions; outcomes {dict(report.outcomes)}; "
        f"store: {sqlite_path}",
        file=out,
    )
    return report
