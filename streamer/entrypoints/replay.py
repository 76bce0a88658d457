"""The embedded default: replay a clickstream file through the real domain code.

No Kafka, no Cassandra, no GPU: events go through the worker's own intake and scheduler (on
event time, so runs are reproducible, with an in-memory pending buffer), turned into the same AlignXplore+
prompts and versioned by the same update service into an embedded SQLite store.  The summary
engine is the CPU baseline (clearly labelled) or any OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from schemas import SummaryChanged, SummaryUpdateFailed

from ..adapters.memory.pending import MemoryPendingBuffer
from ..adapters.memory.publish import CollectingPublisher
from ..adapters.sqlite.store import SqliteProfileStore
from ..domain.pending import PendingIndex, WindowRules
from ..errors import InvalidEventError
from ..ports import ChangePublisher, ProfileStore, SummaryModel, TokenCounter
from ..services.flow import UpdateFlow
from ..services.policy import RetryPolicy
from ..services.scheduler import Finished, Scheduler
from ..services.updater import ProfileUpdater, UpdatePolicy

log = logging.getLogger(__name__)

BUNDLED_SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample_clickstream.jsonl"


@dataclass
class ReplayReport:
    events: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    changes: list[SummaryChanged] = field(default_factory=list)
    users: int = 0


@dataclass(frozen=True, slots=True)
class _Line:
    """One file line as an input record (the flow's intake takes Kafka-like records)."""

    value: bytes
    offset: int
    key: bytes | None = None
    topic: str = "replay"
    partition: int = 0
    timestamp: float | None = None
    headers: Any = None


class _CountInvalid:
    """Dead letters of a replay: counted by reason (there is no dead-letter topic)."""

    def __init__(self, report: ReplayReport) -> None:
        self.report = report

    async def publish(self, error: InvalidEventError, **_: Any) -> None:
        self.report.invalid[error.code] += 1


def _event_time(raw: bytes) -> float | None:
    try:
        stamp = json.loads(raw).get("occurred_at")
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except Exception:  # noqa: BLE001 - an invalid line is counted by the intake
        return None


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
    token_counter: TokenCounter | None = None,
) -> ReplayReport:
    """Replay raw JSONL records in order (windows on event time); returns what happened.

    Used by the embedded demo (SQLite, baseline) and by ``streamer backfill`` (the configured
    store and model): records walk the worker's own path (intake -> pending buffer -> due
    windows -> update service), with an in-memory buffer and event time as the clock.
    """
    report = ReplayReport()
    collected = CollectingPublisher()
    updater = ProfileUpdater(store, model, _Tee(collected, publisher), policy,
                             token_counter=token_counter)
    clock_now = [0.0]

    def clock() -> float:
        return clock_now[0]

    def finished(f: Finished) -> None:
        for r in f.results:
            report.outcomes[r.outcome.value] += 1
        if f.error is not None:
            report.outcomes["parked" if f.decision == "parked" else "failed"] += 1

    index = PendingIndex(WindowRules(max_events=window_events, max_age_s=window_age_s))
    buffer = MemoryPendingBuffer()
    scheduler = Scheduler(index, buffer, updater, updater.publisher, decode=lambda e: flow.decode(e),
                          max_concurrency=concurrency, clock=clock,
                          retry=RetryPolicy(base_s=0.0, max_s=0.0, park_after=3),
                          max_events_per_update=max(window_events, 1))
    flow = UpdateFlow(index, buffer, scheduler, _CountInvalid(report), max_message_bytes=1 << 20,
                      require_key=False, clock=clock)
    scheduler.on_finished = finished
    users: set[str] = set()
    seen: set[bytes] = set()
    bar = tqdm(lines, desc="replaying", unit="ev", disable=not progress, file=sys.stderr)
    for i, raw in enumerate(bar):
        report.events += 1
        at = _event_time(raw)
        if at is not None:
            clock_now[0] = max(clock_now[0], at)
        await scheduler.tick()
        before = flow.stats.buffered
        await flow.intake([_Line(raw, i)])
        if flow.stats.buffered > before:
            doc = json.loads(raw)
            users.add(doc["user_id"])
            key = f"{doc['user_id']}\x00{doc['event_id']}".encode()
            if key in seen:
                report.duplicates += 1
            seen.add(key)
        await asyncio.sleep(0)  # let started updates run
        bar.set_postfix(versions=len(collected.events), refresh=False)
    await scheduler.flush()
    bar.close()
    report.changes = collected.events
    report.users = len(users)
    return report


class _Tee:
    """Keeps every change event for the report and forwards it to an optional publisher."""

    def __init__(self, collected: CollectingPublisher, publisher: ChangePublisher | None) -> None:
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
