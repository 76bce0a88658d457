"""Starts due windows against the model budget, and settles each one: applied, retried, parked.

The data walks one way: intake writes events to the durable buffer and notes them in the
:class:`~streamer.domain.pending.PendingIndex`; :meth:`Scheduler.tick` picks due windows
(longest-waiting first) while update slots are free; an update reads the user's pending events
from the buffer, applies them as one or more consecutive versions (a chain, when they do not fit
one prompt), deletes them from the buffer and tells the index.  Nothing calls back into intake.

Under overload windows grow instead of calls queueing: a due user waits in the index, its later
events join the same window, and the next update carries them all (up to the prompt budget).

A failed update goes through the one failure policy (:mod:`streamer.services.policy`): retriable
errors back off and retry without limit (and report the worker degraded); anything else backs
off and retries at most ``park_after`` times, then the window is parked with its reason, one
failure notice with a deterministic id is published, and the user's later events go on.  When
the model fails everyone (since the user's previous attempt no model-written version was stored
and other users failed too, e.g. a model serving garbage), nobody is parked: windows are retried
with backoff until it recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas import Interaction, SummaryUpdateFailed

from ..domain.catalog import Lookup, missing_items
from ..domain.codec import decode_buffered
from ..domain.pending import PendingIndex, TokenBucket
from ..domain.windowing import window_id
from ..errors import FencedError, InvalidEventError, OutputRejectedError, StreamerError
from ..ports import ChangePublisher, DeadLetterSink, ParkedWindow, PendingBuffer, PendingEntry, PendingUser
from ..settings import CatalogSettings, WindowSettings, default_of
from ..telemetry import Telemetry, WindowTrace, extract_span_context
from .ownership import Ownership
from .policy import Abandon, Park, Retry, RetryPolicy, Scope, decide
from .updater import Outcome, ProfileUpdater, UpdateResult

log = logging.getLogger(__name__)



@dataclass
class UpdateStats:
    """Update counters exposed to logs, ``/stats`` and reports."""

    outcomes: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    parked: int = 0
    dead_lettered: int = 0  # event ids reused with other content


@dataclass(frozen=True, slots=True)
class Finished:
    """One settled update: the versions it stored, or the error and what was decided."""

    user_id: str
    results: tuple[UpdateResult, ...]
    error: BaseException | None = None
    decision: str = "applied"  # applied | retry | parked | abandoned
    events: int = 0


class BudgetedModel:
    """A summary model behind the scheduler's model budget: at most ``slots`` calls in flight.

    Updates spend part of their time outside the model call (buffer read, version claim,
    publish); the scheduler runs up to twice as many updates as model slots, so that the pool
    never idles while an update is writing to the store, and at most ``slots`` of them wait here
    for a model slot."""

    def __init__(self, model: Any, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.inner = model
        self.name = getattr(model, "name", "model")
        self.slots = slots
        self._sem = asyncio.Semaphore(slots)
        self.in_flight = 0

    def __getattr__(self, name: str) -> Any:  # count_tokens, aclose... of the real model
        return getattr(self.inner, name)

    @contextlib.asynccontextmanager
    async def spare_slot(self) -> AsyncIterator[bool]:
        """A model slot for lower-priority work (the quality judge) only if one is free right
        now: yields True holding it, or False at once (updates are waiting or all slots busy)."""
        if self._sem.locked():
            yield False
            return
        await self._sem.acquire()
        self.in_flight += 1
        try:
            yield True
        finally:
            self.in_flight -= 1
            self._sem.release()

    async def generate(self, request: Any) -> Any:
        async with self._sem:
            self.in_flight += 1
            try:
                return await self.inner.generate(request)
            finally:
                self.in_flight -= 1


def digest(value: bytes) -> str:
    return hashlib.blake2b(value, digest_size=12).hexdigest()


class StampClock:
    """Strictly increasing microsecond stamps for ordered partition-index writes."""

    def __init__(self) -> None:
        self._last = 0

    def __call__(self) -> int:
        now = time.time_ns() // 1000
        self._last = max(self._last + 1, now)
        return self._last


CATALOG_RECHECK_S = 2.0
"""A window waiting for catalog items (or for the catalog to load) reads its items again after
this long: an item published after the click resolves within it (one buffer read per look)."""


class Scheduler:
    def __init__(
        self,
        index: PendingIndex,
        buffer: PendingBuffer,
        updater: ProfileUpdater,
        notices: ChangePublisher,
        *,
        budget: BudgetedModel | None,
        prompt_tokens: int,
        clock: Callable[[], float] = time.time,
        retry: RetryPolicy | None = None,
        max_events_per_update: int = default_of(WindowSettings, "max_events_per_update"),
        max_read_events: int = 512,
        ownership: Ownership | None = None,
        dead_letters: DeadLetterSink | None = None,
        stamps: StampClock | None = None,
        tokens_per_s: float | None = None,
        telemetry: Telemetry | None = None,
        catalog: Lookup | None = None,
        catalog_grace_s: float = default_of(CatalogSettings, "grace_s"),
        catalog_ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.index = index
        # items named by id only: a window waits while one of its events names an item the
        # catalog does not know and is younger than the grace period, and while the catalog
        # is still loading (an item not loaded yet is not unknown)
        self.catalog = catalog
        self.catalog_grace_s = catalog_grace_s
        self.catalog_ready = catalog_ready
        self.buffer = buffer
        self.updater = updater
        # the model budget (the updater's model is this same object): calls in flight are
        # capped there, updates here at twice that
        self.model = budget
        self.notices = notices
        self.max_concurrency = budget.slots if budget is not None else 1
        self.clock = clock
        self.retry = retry or RetryPolicy()
        self.prompt_tokens = prompt_tokens
        self.max_events_per_update = max_events_per_update
        self.max_read_events = max_read_events
        # optional second budget: estimated prompt tokens per second of started windows
        self.token_budget = TokenBucket(tokens_per_s) if tokens_per_s else None
        self.ownership = ownership or Ownership()
        self.dead_letters = dead_letters
        self.stats = UpdateStats()
        self.stamps = stamps or StampClock()
        self.telemetry = telemetry or Telemetry.noop()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.closing = False
        self.degraded_reason: str | None = None
        self.parked_users: set[str] = set()
        # tells a poison user from a model that fails everyone (then nobody is parked): when
        # the last model-written version was stored, and recent failed attempts (time, user)
        self._last_success_at = float("-inf")
        self._failures: deque[tuple[float, str]] = deque(maxlen=1000)
        self._previous_failure: dict[str, float] = {}

    # -- state ---------------------------------------------------------------------------------

    @property
    def busy(self) -> int:
        """Model calls in flight."""
        return self.model.in_flight if self.model is not None else 0

    @property
    def updates(self) -> int:
        return len(self._tasks)

    @property
    def max_updates(self) -> int:
        return 2 * self.max_concurrency

    @property
    def saturated(self) -> bool:
        return len(self._tasks) >= self.max_updates

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None

    # -- starting ------------------------------------------------------------------------------

    async def tick(self, now: float | None = None) -> int:
        """Start due windows while update slots are free; returns how many started.

        While degraded (a dependency failing), one window at a time probes it."""
        if self.closing:
            return 0
        now = self.clock() if now is None else now
        free = self.max_updates - len(self._tasks)
        if self.degraded:
            free = min(free, 0 if self._tasks else 1)
        if free <= 0:
            return 0
        started = 0
        due = self.index.pop_due(now, free)
        for i, user_id in enumerate(due):
            if user_id in self._tasks:  # cannot happen (in flight is never due); be safe
                self.index.requeue(user_id)
                continue
            if self.token_budget is not None:
                w = self.index.get(user_id)
                cost = max(1, min(w.tokens if w else 1, self.prompt_tokens))
                if not self.token_budget.take(cost, now):  # over the tokens/s budget: wait
                    for rest in due[i:]:
                        self.index.requeue(rest)
                    break
            self.index.take(user_id)
            task = asyncio.create_task(self._run(user_id), name=f"update-{user_id[:16]}")
            self._tasks[user_id] = task
            task.add_done_callback(lambda _t, u=user_id: self._tasks.pop(u, None))
            started += 1
        return started

    # -- one update ----------------------------------------------------------------------------

    def _guard(self, partition: int) -> Callable[[], None]:
        def check() -> None:
            if not self.owns(partition):
                raise FencedError(f"partition {partition} is no longer owned by this worker")
        return check

    async def _run(self, user_id: str) -> None:
        w = self.index.get(user_id)
        assert w is not None
        partition = w.partition
        applied: list[PendingEntry] = []
        results: list[UpdateResult] = []
        entries: list[PendingEntry] = []
        more = False
        hold_until: float | None = None
        arrived = 0
        guard = self._guard(partition)
        try:
            guard()
            entries = await self.buffer.read(user_id, self.max_read_events)
            arrived = w.count  # arrivals since the update started: the read may include them
            more = len(entries) >= self.max_read_events
            entries = await self._drop_conflicts(user_id, entries)
            decoded = {id(e): decode_buffered(e.value) for e in entries}
            # chronological, then input order (a redelivered copy keeps its event time)
            entries.sort(key=lambda e: (decoded[id(e)].occurred_at, e.offset))
            cut, hold_until = self._awaiting_items(entries, decoded)
            if hold_until is not None:
                if cut == 0:  # the oldest event waits for its items: nothing to apply yet
                    self.index.defer(user_id, until=hold_until)
                    return
                entries, more = entries[:cut], True  # apply the events before it, in order
            for chunk in self.chain(entries):
                events = [decoded[id(e)] for e in chunk]
                result = await self.updater.apply(
                    user_id, events, trace=_trace(chunk), guard=guard,
                    digests={e.event_id: e.digest for e in chunk})
                if result.outcome is Outcome.REJECTED_OUTPUT:
                    raise OutputRejectedError(result.rejections, result.attempts,
                                              result.record.model if result.record else None)
                for e in chunk:
                    if e.event_id in result.reused_event_ids:
                        await self._reused(e)
                results.append(result)
                if result.outcome is Outcome.UPDATED:
                    self._last_success_at = self.clock()
                applied.extend(chunk)
                await self._remove(user_id, chunk, None)
        except asyncio.CancelledError:
            self._settle_failure(user_id)
            raise
        except Exception as exc:  # every failure goes through the one policy
            try:
                await self._failed(user_id, partition, applied, entries, more, results, exc,
                                   arrived)
            except Exception:  # noqa: BLE001 - parking itself failed: retry the window later
                log.exception("settling a failed update failed (user_id=%s); retrying later",
                              user_id)
                self._settle_failure(user_id, delay_s=self.retry.backoff(1))
            return
        self._recover()
        self._previous_failure.pop(user_id, None)
        gone = self.index.done(user_id, len(applied), more=more, now=self.clock(),
                               arrived_before_read=arrived)
        if hold_until is not None:
            self.index.hold(user_id, until=hold_until)
        if gone and self.owns(partition):
            await self._remove(user_id, [], PendingUser(user_id, partition, 0.0))
        self.parked_users.discard(user_id)
        self._report(Finished(user_id, tuple(results), events=len(applied)))

    def _awaiting_items(self, entries: Sequence[PendingEntry],
                        decoded: Mapping[int, Interaction]) -> tuple[int, float | None]:
        """The first event (in window order) that names an item the catalog does not know yet
        and was buffered less than the grace period ago (any age while the catalog is still
        loading), and when to look again; events before it can be applied now.
        (len(entries), None): nothing waits."""
        if self.catalog is None:
            return len(entries), None
        now = self.clock()
        loading = not self.catalog_ready()
        for i, e in enumerate(entries):
            young = now - e.buffered_at < self.catalog_grace_s
            if (young or loading) and missing_items(decoded[id(e)], self.catalog):
                if loading:
                    return i, now + CATALOG_RECHECK_S
                # look again soon (the item may arrive any time), at the latest when grace ends
                return i, min(e.buffered_at + self.catalog_grace_s, now + CATALOG_RECHECK_S)
        return len(entries), None

    def model_wide_failure(self, user_id: str, since: float | None) -> bool:
        """Since this user's previous failed attempt, no model-written version was stored and
        other users' updates failed too: the model fails everyone, the user is not to blame.
        (A user failing while others succeed, or failing alone, is a poison user.)"""
        if since is None or self._last_success_at >= since:
            return False
        return any(t >= since and u != user_id for t, u in reversed(self._failures))

    def chain(self, entries: Sequence[PendingEntry]) -> list[list[PendingEntry]]:
        """Split a window, in order, into prompt-sized consecutive updates (by each entry's
        token estimate and ``max_events_per_update``).  A single oversized entry is its own
        update (the service truncates its item text)."""
        chunks: list[list[PendingEntry]] = []
        current: list[PendingEntry] = []
        size = 0
        for e in entries:
            if current and (size + e.tokens > self.prompt_tokens
                            or len(current) >= self.max_events_per_update):
                chunks.append(current)
                current, size = [], 0
            current.append(e)
            size += e.tokens
        if current:
            chunks.append(current)
        return chunks

    async def _drop_conflicts(self, user_id: str,
                              entries: list[PendingEntry]) -> list[PendingEntry]:
        """An event id buffered twice with different content: the first one (lowest input
        offset) wins, the others are dead-lettered as ``event_id_reused`` and deleted."""
        seen: set[str] = set()
        keep, reused = [], []
        for e in entries:
            (reused if e.event_id in seen else keep).append(e)
            seen.add(e.event_id)
        if reused:
            for e in reused:
                await self._reused(e)
            await self._remove(user_id, reused, None)
        return keep

    async def _remove(self, user_id: str, entries: Sequence[PendingEntry],
                      user_done: PendingUser | None) -> None:
        await self.buffer.remove(user_id, entries, user_done=user_done, stamp_us=self.stamps())

    async def _failed(self, user_id: str, partition: int, applied: list[PendingEntry],
                      entries: list[PendingEntry], more: bool, results: list[UpdateResult],
                      exc: Exception, arrived: int) -> None:
        w = self.index.get(user_id)
        attempt = (w.attempts if w else 0) + 1
        now = self.clock()
        previous = self._previous_failure.get(user_id)
        self._previous_failure[user_id] = now
        self._failures.append((now, user_id))
        decision = decide(exc, scope=Scope.WINDOW, attempt=attempt, policy=self.retry)
        if not self.owns(partition):
            decision = Abandon()
        elif isinstance(decision, Park) and not [e for e in entries if e not in applied]:
            # nothing was read (the read itself failed) or all of it is stored: nothing to park
            decision = Retry(self.retry.backoff(attempt), transient=False)
        elif isinstance(decision, Park) and self.model_wide_failure(user_id, previous):
            # many users fail and (almost) nobody succeeds: the model or the pool is at fault,
            # and parking now would park everyone; retry until it recovers
            decision = Retry(self.retry.backoff(attempt), transient=False)
        if isinstance(decision, Abandon):
            log.info("update abandoned: partition %d was revoked (user_id=%s)", partition, user_id)
            self._previous_failure.pop(user_id, None)
            self.index.forget([user_id])
            self._report(Finished(user_id, tuple(results), exc, "abandoned"))
            return
        if isinstance(decision, Retry):
            level = logging.WARNING if isinstance(exc, StreamerError) else logging.ERROR
            log.log(level, "update failed (%s: %s); attempt %d, retry in %.1fs (user_id=%s)",
                    type(exc).__name__, exc, attempt, decision.delay_s, user_id,
                    exc_info=not isinstance(exc, StreamerError))
            if decision.transient:
                self._degrade(f"{type(exc).__name__}: {exc}")
            if applied:  # the chain's first links are stored: only the rest is retried
                self.index.done(user_id, len(applied), more=True, now=self.clock())
                self.index.take(user_id)
            self.index.failed(user_id, retry_at=self.clock() + decision.delay_s)
            self._report(Finished(user_id, tuple(results), exc, "retry", len(applied)))
            return
        assert isinstance(decision, Park)
        rest = [e for e in entries if e not in applied]
        await self._park(user_id, partition, rest, decision.reason, exc, attempt)
        self._previous_failure.pop(user_id, None)
        gone = self.index.done(user_id, len(entries), more=more, now=self.clock(),
                               arrived_before_read=arrived)
        await self._remove(user_id, rest, PendingUser(user_id, partition, 0.0) if gone else None)
        self._report(Finished(user_id, tuple(results), exc, "parked", len(rest)))

    def _settle_failure(self, user_id: str, delay_s: float = 0.0) -> None:
        """Cancelled (shutdown), or settling failed: what is not stored stays in the buffer,
        and the window is due again after ``delay_s``."""
        w = self.index.get(user_id)
        if w is not None and w.in_flight:
            self.index.failed(user_id, retry_at=self.clock() + delay_s)

    async def _park(self, user_id: str, partition: int, rest: list[PendingEntry], error_type: str,
                    exc: Exception, attempts: int) -> None:
        wid = window_id(user_id, (e.event_id for e in rest))
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        await self.buffer.park(ParkedWindow(user_id, wid, partition, error_type, reason,
                                            attempts, self.clock(), tuple(rest)))
        current = None
        try:
            current = await self.updater.store.get_current(user_id)
        except Exception:  # noqa: BLE001 - the notice is informative; the park is what matters
            log.debug("could not read the kept version for a failure notice", exc_info=True)
        await self.notices.publish_failure(SummaryUpdateFailed(
            event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"parked/{user_id}/{wid}")),
            user_id=user_id,
            window_id=wid,
            event_ids=tuple(e.event_id for e in rest),
            kept_version=current.version if current else None,
            reasons=tuple(getattr(exc, "reasons", ()) or (error_type,)),
            attempts=attempts,
            model=getattr(exc, "model", None) or getattr(self.updater.model, "name", "unknown"),
            occurred_at=self.updater.clock(),
        ))
        self.parked_users.add(user_id)
        self.telemetry.record_parked(error_type)
        log.error("window parked after %d attempts: user_id=%s window_id=%s events=%d (%s); "
                  "inspect with `streamer parked list`", attempts, user_id, wid, len(rest), reason)

    def owns(self, partition: int) -> bool:
        return self.ownership.owns(partition)

    async def _reused(self, entry: PendingEntry) -> None:
        """An event id seen again with other content: dead-lettered, never applied."""
        code = "event_id_reused"
        exc = InvalidEventError(code, f"event id {entry.event_id!r} of user {entry.user_id!r} "
                                      "was seen before with different content; the first one "
                                      "is applied, this one is not")
        if self.dead_letters is not None:
            await self.dead_letters.publish(
                exc, key=entry.user_id.encode(), value=entry.value, headers=[],
                source_topic="pending-buffer", partition=entry.partition, offset=entry.offset)
        self.stats.dead_lettered += 1
        self.telemetry.record_dead_letter(code)

    def _report(self, f: Finished) -> None:
        """Count a settled update (stats, metrics, log)."""
        if f.error is not None:
            if f.decision == "parked":
                self.stats.parked += 1
            self.stats.failures += 1
            rejected = isinstance(f.error, OutputRejectedError)
            self.telemetry.record_update("rejected_output" if rejected else "error", f.events)
            return
        for r in f.results:
            outcome = r.outcome.value
            self.stats.outcomes[outcome] = self.stats.outcomes.get(outcome, 0) + 1
            n = len(r.record.event_ids) if r.record else 0
            self.telemetry.record_update(outcome, n)
            log.info("window done: outcome=%s events=%d version=%s latency_ms=%.0f",
                     outcome, n, r.record.version if r.record else None,
                     r.record.latency_ms if r.record else 0.0)

    def _degrade(self, reason: str) -> None:
        if not self.degraded:
            log.error("dependency failing; windows keep growing until it recovers: %s", reason)
        self.degraded_reason = reason

    def _recover(self) -> None:
        if self.degraded:
            log.info("dependency recovered")
        self.degraded_reason = None

    # -- stopping ------------------------------------------------------------------------------

    async def wait_users(self, user_ids: Sequence[str], timeout_s: float) -> None:
        tasks = [t for u, t in self._tasks.items() if u in set(user_ids)]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    async def drain(self, timeout_s: float) -> bool:
        """Stop starting updates; wait up to ``timeout_s`` for those in flight, cancel the rest
        (their events stay in the durable buffer).  True when nothing was cancelled."""
        self.closing = True
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(list(self._tasks.values()), timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return not pending

    async def wait_idle(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def flush(self, *, max_rounds: int = 50) -> None:
        """Close every pending window now and wait until all updates ended (end of a replay).
        Windows still failing after ``max_rounds`` stay pending."""
        for _ in range(max_rounds):
            await self.tick(float("inf"))
            if not self._tasks and not len(self.index):
                return
            await self.wait_idle()


def _trace(entries: Sequence[PendingEntry]) -> WindowTrace:
    """Trace links, Kafka timestamps and input offsets kept with the buffered records."""
    links: list[Any] = []
    times: dict[str, float] = {}
    offsets = {e.event_id: (e.partition, e.offset) for e in entries}
    for e in entries:
        if e.traceparent:
            sc = extract_span_context([("traceparent", e.traceparent.encode())])
            if sc is not None:
                links.append(sc)
        if e.kafka_ts > 0:
            times[e.event_id] = e.kafka_ts
    return WindowTrace(links=tuple(links), event_times=times, offsets=offsets)
