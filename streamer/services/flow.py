"""The update flow's intake: input records in, durable pending windows out.

A batch of input records is decoded; invalid ones are dead-lettered (original bytes, reason in
the headers); valid ones are written to the durable pending buffer (idempotent on user, event id
and content digest) and noted in the pending index.  Only then is the batch acknowledged, and
the consumer commits the input offsets on a fixed interval: committed means "buffered", never
"applied".  Windows close and are applied by the :class:`~streamer.services.scheduler.Scheduler`, which
reads them back from the buffer.

Used by the Kafka worker (records are faust messages) and by the replay command (records built
from a file), so both walk the same path: intake -> buffer -> due timer -> update -> store ->
publish -> (buffer delete).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ..domain.codec import decode_interaction
from ..domain.mapping import Mapping
from ..domain.pending import PendingIndex
from ..errors import InvalidEventError
from ..ports import DeadLetterSink, PendingBuffer, PendingEntry, PendingUser
from ..telemetry import Telemetry, _header_value
from .policy import DeadLetter, Retry, RetryPolicy, Scope, decide
from .scheduler import Scheduler, digest

log = logging.getLogger(__name__)


class Record(Protocol):
    """What intake needs of an input record (a faust/aiokafka message fits)."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: float | None  # Kafka record timestamp in SECONDS (faust's Message convention)
    headers: Any


@dataclass
class FlowStats:
    """Intake counters exposed to logs, readiness and tests (updates: ``Scheduler.stats``)."""

    consumed: int = 0
    buffered: int = 0
    dead_lettered: int = 0


INTAKE_RETRY = RetryPolicy(base_s=1.0, max_s=10.0, park_after=1)
"""Backoff of intake's buffer and dead-letter writes (nothing is parked in that scope)."""


def estimate_entry_tokens(value: bytes) -> int:
    """A cheap over-estimate of what one record adds to a rendered prompt: its JSON size / 3
    (the rendered item text is shorter than the record's JSON)."""
    return len(value) // 3 + 8


class UpdateFlow:
    def __init__(
        self,
        index: PendingIndex,
        buffer: PendingBuffer,
        scheduler: Scheduler,
        dead_letters: DeadLetterSink,
        *,
        max_message_bytes: int,
        require_key: bool = True,
        max_event_age_s: float | None = None,
        max_clock_skew_s: float | None = None,
        dedupe_horizon_s: float | None = None,
        clock: Callable[[], float] = time.time,
        retry: RetryPolicy = INTAKE_RETRY,
        pipeline: bool = False,
        max_queued_rows: int = 2000,
        telemetry: Telemetry | None = None,
        mapping: Mapping | None = None,
    ) -> None:
        # turns each record of an existing format into our event before validation
        self.mapping = mapping
        self.index = index
        self.buffer = buffer
        self.scheduler = scheduler
        self.dead_letters = dead_letters
        self.max_message_bytes = max_message_bytes
        self.require_key = require_key
        self.max_event_age_s = max_event_age_s
        self.max_clock_skew_s = max_clock_skew_s
        self.dedupe_horizon_s = dedupe_horizon_s
        self.clock = clock
        self.retry = retry
        self.telemetry = telemetry or Telemetry.noop()
        self.stats = FlowStats()
        self.ownership = scheduler.ownership
        # (topic, partition) -> offset after the last record buffered or dead-lettered: what
        # the consumer may commit (see adapters/kafka/consumer.py)
        self.positions: dict[tuple[str, int], int] = {}
        self.intake_error: str | None = None
        self.closing = False
        self._started = time.monotonic()
        self._first_batch = True
        # pipelined intake (the worker): batches decoded while a buffer write is in flight queue
        # up, and the next write takes all of them (group commit), so the write size follows the
        # buffer's latency; intake waits only when more than ``max_queued_rows`` are queued
        self.pipeline = pipeline
        self.max_queued_rows = max_queued_rows
        self._queue: list[tuple[list[PendingEntry], dict[tuple[str, int], int]]] = []
        self._queued_rows = 0
        self._writer: asyncio.Task[None] | None = None
        self._picked = asyncio.Event()  # the writer took the queue (or stopped)
        t = self.telemetry
        t.observe_value("streamer_pool_in_flight", lambda: scheduler.busy)
        t.observe_value("streamer_pool_saturated", lambda: 1 if scheduler.saturated else 0)
        t.observe_value("streamer_pending_events", index.pending_events)
        t.observe_value("streamer_pending_users", lambda: len(index))
        t.observe_value("streamer_parked_users", lambda: len(scheduler.parked_users))
        t.observe_value("streamer_oldest_pending_age_seconds", self.oldest_pending_age_s)
        t.observe_value("streamer_ready", lambda: 1 if self.readiness()[0] else 0)

    # -- intake --------------------------------------------------------------------------------

    async def intake(self, records: Sequence[Record]) -> None:
        """Buffer a batch durably (retrying while the buffer is down); dead-letter invalid
        records.  Returns once every record is either buffered or dead-lettered."""
        now_dt = datetime.now(UTC)
        now = self.clock()
        if self._first_batch and records:
            self._first_batch = False
            log.info("first records consumed %.1fs after start: %d records, first %s[%d]@%d",
                     time.monotonic() - self._started, len(records), records[0].topic,
                     records[0].partition, records[0].offset)
        checks: dict[str, Any] = dict(
            max_bytes=self.max_message_bytes, now=now_dt, max_age_s=self.max_event_age_s,
            max_skew_s=self.max_clock_skew_s, require_key=self.require_key)
        entries: dict[tuple[str, str, str], PendingEntry] = {}
        for m in records:
            self.stats.consumed += 1
            value = m.value
            ts = m.timestamp
            kafka_ts = float(ts) if isinstance(ts, int | float) and ts > 0 else 0.0
            try:
                if self.dedupe_horizon_s and kafka_ts and now - kafka_ts > self.dedupe_horizon_s:
                    raise InvalidEventError(
                        "beyond_dedupe_horizon",
                        f"record written {(now - kafka_ts) / 3600:.1f} h ago, beyond the event-id "
                        f"dedupe horizon ({self.dedupe_horizon_s / 3600:.1f} h): it may have been "
                        "applied already and its id forgotten, so applying it could count it "
                        "twice; re-apply old data with `streamer backfill`")
                if self.mapping is not None:  # e.g. a Segment track call -> our event
                    value, event = self.mapping.decode(m.key, value, **checks)
                else:
                    event = decode_interaction(m.key, value, **checks)
            except Exception as exc:  # noqa: BLE001 - the one policy decides
                decision = decide(exc, scope=Scope.RECORD)
                if not isinstance(decision, DeadLetter):
                    raise
                await self._dead_letter(exc, m)  # type: ignore[arg-type]
                continue
            assert value is not None
            entry = PendingEntry(
                user_id=event.user_id, event_id=event.event_id, digest=digest(value),
                partition=m.partition, offset=m.offset, value=value, buffered_at=now,
                tokens=estimate_entry_tokens(value),
                traceparent=_header_value(m.headers, "traceparent") or "",
                kafka_ts=kafka_ts,
            )
            entries[(entry.user_id, entry.event_id, entry.digest)] = entry
        ends: dict[tuple[str, int], int] = {}
        for m in records:
            key = (m.topic, m.partition)
            ends[key] = max(ends.get(key, -1), m.offset + 1)
        rows = list(entries.values())
        if not self.pipeline:
            await self._settle(rows, ends)
            return
        await self._enqueue(rows, ends)

    async def _enqueue(self, rows: list[PendingEntry], ends: dict[tuple[str, int], int]) -> None:
        """Queue a decoded batch behind the write in flight (pipelined intake)."""
        while True:
            self._writer_failure()
            if self._queued_rows < self.max_queued_rows:
                break
            self._picked.clear()
            await self._picked.wait()  # backpressure: the buffer is slower than the input
        self._queue.append((rows, ends))
        self._queued_rows += len(rows)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())

    async def _write_queued(self) -> None:
        """Write everything queued, one group at a time, in arrival order: positions (what the
        consumer commits) move only when a batch and every batch before it are buffered."""
        try:
            while self._queue:
                batches, self._queue, self._queued_rows = self._queue, [], 0
                self._picked.set()
                group: dict[tuple[str, str, str], PendingEntry] = {}
                ends: dict[tuple[str, int], int] = {}
                for rows, batch_ends in batches:
                    group.update(((e.user_id, e.event_id, e.digest), e) for e in rows)
                    for key, end in batch_ends.items():
                        ends[key] = max(ends.get(key, -1), end)
                await self._settle(list(group.values()), ends)
        finally:
            self._picked.set()

    def _writer_failure(self) -> None:
        """Raise what stopped the pipelined writer (its batches were not buffered, so their
        offsets were not committed either)."""
        if self._writer is not None and self._writer.done():
            self._writer.result()

    async def flush_intake(self) -> None:
        """Wait until every queued batch (pipelined intake) is buffered."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
        self._writer_failure()

    async def _settle(self, rows: list[PendingEntry], ends: dict[tuple[str, int], int]) -> None:
        if rows:
            await self._buffer(rows)
        for key, end in ends.items():
            if self.owns(key[1]) and end > self.positions.get(key, -1):
                self.positions[key] = end

    async def _buffer(self, rows: list[PendingEntry]) -> None:
        # records of a partition revoked meanwhile are still written (idempotent: the new owner
        # reads them again, as they are not committed here), but not scheduled by this worker
        new_users: dict[str, PendingUser] = {}
        for e in rows:
            if e.user_id not in self.index and e.user_id not in new_users \
                    and self.owns(e.partition):
                new_users[e.user_id] = PendingUser(e.user_id, e.partition, e.buffered_at)
        await self._write(rows, list(new_users.values()))
        late: list[PendingUser] = []
        for e in rows:
            if not self.owns(e.partition):
                continue
            if self.index.add(e.user_id, e.partition, tokens=e.tokens, now=e.buffered_at) \
                    and e.user_id not in new_users:
                # settled and forgotten while the batch was being written: record it again
                late.append(PendingUser(e.user_id, e.partition, e.buffered_at))
        if late:
            await self._write([], late)
        self.stats.buffered += len(rows)
        self.telemetry.record_buffered(len(rows))

    async def _write(self, rows: list[PendingEntry], users: list[PendingUser]) -> None:
        await self._until_done("pending buffer write", lambda: self.buffer.add(
            rows, users, stamp_us=self.scheduler.stamps()))

    async def _dead_letter(self, exc: InvalidEventError, m: Record) -> None:
        await self._until_done("dead-letter write", lambda: self.dead_letters.publish(
            exc, key=m.key, value=m.value, headers=_headers(m.headers),
            source_topic=m.topic, partition=m.partition, offset=m.offset))
        self.stats.dead_lettered += 1
        self.telemetry.record_dead_letter(exc.code)

    async def _until_done(self, what: str, op: Callable[[], Awaitable[Any]]) -> None:
        """Run ``op`` until it succeeds, backing off, with intake paused and readiness failing
        meanwhile: the batch is not committed until then, and skipping a record would lose it."""
        attempt = 0
        while True:
            try:
                await op()
            except Exception as exc:  # noqa: BLE001 - the one policy decides; never skip
                attempt += 1
                decision = decide(exc, scope=Scope.WRITE, attempt=attempt, policy=self.retry)
                if self.closing or not isinstance(decision, Retry):
                    raise
                if self.intake_error is None:
                    log.error("%s failed (%s: %s); intake paused, retrying (input offsets are "
                              "not committed meanwhile)", what, type(exc).__name__, exc)
                self.intake_error = f"{what}: {type(exc).__name__}: {exc}"
                await asyncio.sleep(decision.delay_s)
                continue
            if self.intake_error is not None:
                log.info("%s succeeded again; intake resumed", what)
            self.intake_error = None
            return

    # -- ownership -----------------------------------------------------------------------------

    def owns(self, partition: int) -> bool:
        return self.ownership.owns(partition)

    async def on_assigned(self, partitions: Iterable[int]) -> int:
        """Rebuild the index of newly assigned partitions from the buffer; overdue windows fire
        on the next tick.  Returns the number of users recovered."""
        new = self.ownership.assign(partitions)
        if not new:
            return 0
        users = await self.buffer.users(sorted(new))
        for u in users:
            self.index.recover(u.user_id, u.partition, u.first_at)
        if users:
            log.info("rebuilt %d pending windows of partitions %s", len(users), sorted(new))
        return len(users)

    async def on_revoked(self, partitions: Iterable[int], *, wait_s: float = 2.0) -> None:
        """Stop storing and publishing for revoked partitions (in-flight updates are fenced),
        give in-flight updates a moment to settle, and forget the partitions' windows: their
        new owner rebuilds them from the buffer."""
        lost = self.ownership.revoke(partitions)
        for key in [k for k in self.positions if k[1] in lost]:
            del self.positions[key]  # never commit a stale position if it comes back
        users = self.index.users_of(lost)
        await self.scheduler.wait_users(users, wait_s)
        dropped = self.index.forget(u for u in users if u not in self.scheduler._tasks)
        if users:
            log.info("rebalance: handed over %d pending windows (%d events) of partitions %s",
                     len(users), dropped, sorted(lost))

    # -- running -------------------------------------------------------------------------------

    async def tick(self) -> None:
        await self.scheduler.tick()

    def oldest_pending_age_s(self) -> float:
        first = self.index.oldest_first_at()
        return max(0.0, self.clock() - first) if first is not None else 0.0

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details): not ready while the buffer or a dependency fails, or closing."""
        s = self.scheduler
        details = {
            "degraded": s.degraded_reason,
            "intake_error": self.intake_error,
            "closing": s.closing,
            "pending_events": self.index.pending_events(),
            "pending_users": len(self.index),
            "oldest_pending_age_s": round(self.oldest_pending_age_s(), 1),
            "parked_users": len(s.parked_users),
            "model_calls_in_flight": s.busy,
            "model_slots": s.max_concurrency,
            "updates_in_flight": s.updates,
            "saturated": s.saturated,
        }
        ready = not s.degraded and not s.closing and self.intake_error is None
        return ready, details

    async def shutdown(self, timeout_s: float) -> None:
        """Graceful stop: finish in-flight updates within ``timeout_s``; pending windows stay in
        the durable buffer for the partitions' next owner."""
        self.closing = True
        try:
            await asyncio.wait_for(self.flush_intake(), timeout_s)
        except Exception:  # noqa: BLE001 - not buffered: not committed, re-read by the next owner
            log.warning("shutdown: the last intake batch was not buffered; it will be re-read")
        finished = await self.scheduler.drain(timeout_s)
        log.info("shutdown: in-flight updates %s; %d pending windows stay buffered",
                 "finished" if finished else "cancelled at the deadline", len(self.index))


def _headers(headers: Any) -> list[tuple[str, bytes]]:
    if not headers:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return [(k, v) for k, v in headers]
