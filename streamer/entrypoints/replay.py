"""Replay a clickstream file through the worker's own path: the embedded demo and backfill.

No Kafka, no GPU: records go through the worker's intake and scheduler (on EVENT time, so runs
are reproducible, with an in-memory pending buffer), turned into the same AlignXplore+ prompts
and versioned by the same update service.  ``streamer replay`` writes an embedded SQLite store
with the CPU baseline engine (clearly labelled) or any OpenAI-compatible server;
``streamer backfill`` writes the configured store.  The composition root
(``streamer/app.py``, ``build_replay``/``build_backfill``) builds what :class:`Replay` runs.
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

from ..domain.catalog import Catalog
from ..errors import InvalidEventError
from ..ports import ChangePublisher
from ..services.flow import UpdateFlow

log = logging.getLogger(__name__)

BUNDLED_SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample_clickstream.jsonl"

CATALOG_TYPE = b'"catalog.item"'

EVENT_TIME_WINDOW_AGE_S = 3 * 86400.0
"""Replay's window age, in EVENT time: a window closes 3 days after its first event (or at
``STREAMER_WINDOW__MAX_EVENTS``), so that a history file gives windows like a live stream."""


@dataclass
class ReplayReport:
    events: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    changes: list[SummaryChanged] = field(default_factory=list)
    users: int = 0
    catalog_items: int = 0  # catalog records in the file (items named by id resolve to them)


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


class CountingDeadLetters:
    """Dead letters of a replay: counted by reason (there is no dead-letter topic)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    async def publish(self, error: InvalidEventError, **_: Any) -> None:
        self.counts[error.code] += 1


class Tee:
    """Keeps every change event for the report and forwards it to an optional publisher."""

    def __init__(self, publisher: ChangePublisher | None) -> None:
        self.events: list[SummaryChanged] = []
        self.publisher = publisher

    async def publish(self, event: SummaryChanged) -> None:
        self.events.append(event)
        if self.publisher is not None:
            await self.publisher.publish(event)

    async def publish_failure(self, event: SummaryUpdateFailed) -> None:
        if self.publisher is not None:
            await self.publisher.publish_failure(event)


def _event_time(raw: bytes) -> float | None:
    try:
        stamp = json.loads(raw).get("occurred_at")
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except Exception:  # noqa: BLE001 - an invalid line is counted by the intake
        return None


class Replay:
    """Feeds raw JSONL records, in order, to a flow whose clock is the records' event time."""

    class Clock:
        """Event time: the latest ``occurred_at`` seen so far."""

        def __init__(self) -> None:
            self.now = 0.0

        def __call__(self) -> float:
            return self.now

        def advance(self, t: float) -> None:
            self.now = max(self.now, t)

    def __init__(self, flow: UpdateFlow, clock: Replay.Clock, changes: Tee,
                 dead_letters: CountingDeadLetters, catalog: Catalog | None = None) -> None:
        self.catalog = catalog  # fed by the file's catalog records (`streamer import --ids-only`)
        self.flow = flow
        self.clock = clock
        self.changes = changes
        self.dead_letters = dead_letters

    async def run(self, lines: list[bytes], *, progress: bool = True) -> ReplayReport:
        report = ReplayReport()
        flow, scheduler = self.flow, self.flow.scheduler
        users: set[str] = set()
        seen: set[bytes] = set()
        bar = tqdm(lines, desc="replaying", unit="ev", disable=not progress, file=sys.stderr)
        for i, raw in enumerate(bar):
            if self.catalog is not None and CATALOG_TYPE in raw and self._catalog_record(raw):
                report.catalog_items += 1
                continue
            report.events += 1
            at = _event_time(raw)
            if at is not None:
                self.clock.advance(at)
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
            bar.set_postfix(versions=len(self.changes.events), refresh=False)
        await scheduler.flush()
        bar.close()
        stats = scheduler.stats
        report.outcomes.update(stats.outcomes)
        if stats.parked:
            report.outcomes["parked"] = stats.parked
        if stats.failures - stats.parked:
            report.outcomes["failed"] = stats.failures - stats.parked
        report.invalid = Counter(self.dead_letters.counts)
        report.changes = list(self.changes.events)
        report.users = len(users)
        return report


    def _catalog_record(self, raw: bytes) -> bool:
        """Apply a catalog record line (False: the line is not one, e.g. an event whose text
        happens to contain the type name; it goes to the intake)."""
        try:
            doc = json.loads(raw)
        except ValueError:
            return False
        if not isinstance(doc, dict) or doc.get("type") != "catalog.item":
            return False
        try:
            self.catalog.apply(None, raw)  # type: ignore[union-attr]
        except InvalidEventError as exc:
            self.dead_letters.counts[exc.code] += 1
        return True


def read_lines(path: Path) -> list[bytes]:
    return [ln for ln in path.read_bytes().splitlines() if ln.strip()]


def print_evolution(report: ReplayReport, *, users: int, out: TextIO | None = None) -> None:
    """Print how the summaries of a few users evolved, version by version."""
    out = out or sys.stdout
    by_user: dict[str, list[SummaryChanged]] = {}
    for change in report.changes:
        by_user.setdefault(change.user_id, []).append(change)
    for user_id in sorted(by_user)[:users]:
        print(f"\n=== {user_id}: {len(by_user[user_id])} versions ===", file=out)
        for change in by_user[user_id]:
            text = textwrap.fill(change.summary, width=96, initial_indent="    ",
                                 subsequent_indent="    ")
            print(f"  v{change.version} ({len(change.event_ids)} events, {change.model})", file=out)
            q = change.quality
            if q is not None:
                base = (f"; no summary {q.no_summary.accuracy:.0%}" if q.no_summary else "")
                print(f"    [v{q.scored_version} predicted {q.summary.correct}/{q.summary.pairs} "
                      f"of these choices{base}]", file=out)
            print(text, file=out)


def print_quality(report: ReplayReport, *, users: int = 10, out: TextIO | None = None) -> None:
    """How well each summary predicted the user's next window, per user and in aggregate,
    against the same pairs judged with no summary (where that baseline was run)."""
    out = out or sys.stdout
    scored = [c for c in report.changes if c.quality is not None]
    if not scored:
        return
    judge = scored[0].quality.judge if scored[0].quality else ""
    print(f"\n=== how well each summary predicted the user's next choices (judge: {judge}) ===",
          file=out)
    rows: dict[str, list[int]] = {}
    for c in scored:
        q = c.quality
        assert q is not None
        row = rows.setdefault(c.user_id, [0, 0, 0, 0])  # correct, pairs, base correct, base pairs
        row[0] += q.summary.correct
        row[1] += q.summary.pairs
        if q.no_summary is not None:
            row[2] += q.no_summary.correct
            row[3] += q.no_summary.pairs
    for user_id, (ok, n, bok, bn) in sorted(rows.items())[:users]:
        base = f"   no summary {bok / bn:6.1%}" if bn else ""
        print(f"  {user_id:<14} {ok:>3}/{n:<3} {ok / n:6.1%}{base}", file=out)
    if len(rows) > users:
        print(f"  ... {len(rows) - users} more users (`streamer quality` reports them all)",
              file=out)
    ok, n = sum(r[0] for r in rows.values()), sum(r[1] for r in rows.values())
    bok, bn = sum(r[2] for r in rows.values()), sum(r[3] for r in rows.values())
    line = f"  {'all users':<14} {ok:>3}/{n:<3} {ok / n:6.1%}"
    if bn:
        line += f"   no summary {bok / bn:6.1%}   lift {ok / n - bok / bn:+.1%}"
    print(line, file=out)


def print_report(report: ReplayReport, *, engine: str, store: str, users: int,
                 out: TextIO | None = None) -> None:
    out = out or sys.stdout
    print(f"engine: {engine}", file=out)
    if engine.startswith("prefstream-baseline"):
        print("NOTE: summaries below come from the deterministic CPU BASELINE (term statistics),"
              " not from the AlignXplore+ model.", file=out)
    print_evolution(report, users=users, out=out)
    print_quality(report, users=max(users, 8), out=out)
    invalid = sum(report.invalid.values())
    print(
        f"\nreplayed {report.events} records ({invalid} invalid: {dict(report.invalid)}; "
        f"{report.duplicates} duplicates) for {report.users} users -> "
        f"{len(report.changes)} summary versions"
        + (f" ({report.catalog_items} catalog items)" if report.catalog_items else "")
        + f"; outcomes {dict(report.outcomes)}; "
        f"store: {store}",
        file=out,
    )
