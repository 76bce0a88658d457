"""The update flow: interactions in, summary versions and change events out.

Input records are consumed with manual acknowledgement: a record is acknowledged (and so its
offset becomes committable) only once it is dead-lettered, found to be a duplicate, or its
window's version is stored and the change event is acknowledged by the broker.  A crash before
that redelivers it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..adapters.kafka.codec import decode_interaction
from ..adapters.kafka.publish import DeadLetterPublisher
from ..domain.windowing import WindowBook
from ..errors import InvalidEventError
from ..scheduler import Finished, WindowScheduler
from ..service import ProfileUpdater
from ..telemetry import Telemetry, WindowTrace, extract_span_context

log = logging.getLogger(__name__)


@dataclass
class FlowStats:
    """Counters exposed to logs, readiness and tests."""

    consumed: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    failures: int = 0


class UpdateFlow:
    """Holds the windows and scheduler of one worker; the faust agent feeds it events."""

    def __init__(
        self,
        updater: ProfileUpdater,
        dead_letters: DeadLetterPublisher,
        *,
        max_events: int,
        max_age_s: float,
        max_concurrency: int,
        max_message_bytes: int,
        max_pending_events: int = 100_000,
        retry_backoff_s: float = 2.0,
        max_event_age_s: float | None = None,
        max_clock_skew_s: float | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.telemetry = telemetry or Telemetry.noop()
        self.dead_letters = dead_letters
        self.max_message_bytes = max_message_bytes
        self.max_event_age_s = max_event_age_s
        self.max_clock_skew_s = max_clock_skew_s
        self.book: WindowBook[Any] = WindowBook(max_events=max_events, max_age_s=max_age_s)
        self.scheduler: WindowScheduler[Any] = WindowScheduler(
            self.book,
            updater,
            max_concurrency=max_concurrency,
            clock=time.monotonic,
            on_finished=self._finished,
            retry_backoff_s=retry_backoff_s,
            max_pending_events=max_pending_events,
            window_trace=window_trace,
        )
        self.stats = FlowStats()
        t = self.telemetry
        t.observe_value("streamer_pool_in_flight", lambda: self.scheduler.busy)
        t.observe_value("streamer_pool_saturated", lambda: 1 if self.scheduler.saturated else 0)
        t.observe_value("streamer_pending_events", self.book.pending_events)
        self._user_tp: dict[str, Any] = {}

    async def handle(self, event: Any) -> None:
        """Process one faust event (manual-ack stream)."""
        message = event.message
        self.stats.consumed += 1
        try:
            interaction = decode_interaction(
                message.key,
                message.value,
                max_bytes=self.max_message_bytes,
                now=datetime.now(UTC),
                max_age_s=self.max_event_age_s,
                max_skew_s=self.max_clock_skew_s,
            )
        except InvalidEventError as exc:
            await self.dead_letters.publish(
                exc,
                key=message.key,
                value=message.value,
                headers=_headers(message.headers),
                source_topic=message.topic,
                partition=message.partition,
                offset=message.offset,
            )
            self.stats.dead_lettered += 1
            self.telemetry.record_dead_letter(exc.code)
            event.ack()
            return
        self._user_tp[interaction.user_id] = message.tp
        if not await self.scheduler.offer(interaction, event):
            self.stats.duplicates += 1  # acknowledged with the original, once it is applied

    async def tick(self) -> None:
        await self.scheduler.tick()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details): not ready while a dependency is failing updates or shutting down."""
        s = self.scheduler
        details = {
            "degraded": s.degraded_reason,
            "closing": s.closing,
            "pending_events": self.book.pending_events(),
            "pending_users": len(self.book),
            "in_flight": self.book.in_flight,
            "update_slots": s.max_concurrency,
            "saturated": s.saturated,
        }
        return (not s.degraded and not s.closing), details

    async def shutdown(self, timeout_s: float) -> None:
        """Graceful stop: finish in-flight updates within ``timeout_s``; hand back the rest."""
        pending = self.book.pending_events()
        finished = await self.scheduler.drain(timeout_s)
        log.info("shutdown: in-flight updates %s; %d pending events handed back",
                 "finished" if finished else "cancelled at the deadline", pending)

    def on_revoked(self, revoked: set[Any]) -> None:
        """Forget pending windows of partitions this worker lost; their new owner replays them
        from the last committed offset."""
        users = [u for u, tp in self._user_tp.items() if tp in revoked]
        dropped = self.book.drop_users(users)
        for u in users:
            self._user_tp.pop(u, None)
        if dropped:
            log.info("rebalance: handed back %d pending events of %d users", dropped, len(users))

    def _finished(self, finished: Finished[Any]) -> None:
        if finished.error is not None:
            self.stats.failures += 1
            self.telemetry.record_update("error", len(finished.window.events))
            return
        assert finished.result is not None
        outcome = finished.result.outcome.value
        self.stats.outcomes[outcome] = self.stats.outcomes.get(outcome, 0) + 1
        self.telemetry.record_update(outcome, len(finished.window.events))
        record = finished.result.record
        log.info(
            "window done: outcome=%s events=%d version=%s latency_ms=%.0f",
            outcome,
            len(finished.window.events),
            record.version if record else None,
            record.latency_ms if record else 0.0,
        )
        if finished.completed:
            for handle in (*finished.window.handles, *finished.duplicate_handles):
                handle.ack()
        user_id = finished.window.user_id
        if not self.book.has_user(user_id):  # keep per-user state only while it has events
            self._user_tp.pop(user_id, None)


def window_trace(window: Any) -> WindowTrace:
    """Trace contexts (``traceparent`` headers) and Kafka timestamps of a window's records;
    handles are faust events (anything without a ``message`` contributes nothing)."""
    links = []
    times: dict[str, float] = {}
    for event, handle in zip(window.events, window.handles, strict=False):
        message = getattr(handle, "message", None)
        if message is None:
            continue
        sc = extract_span_context(getattr(message, "headers", None))
        if sc is not None:
            links.append(sc)
        ts = getattr(message, "timestamp", None)
        if isinstance(ts, int | float) and ts > 0:
            times[event.event_id] = float(ts)
    return WindowTrace(links=tuple(links), event_times=times)


def _headers(headers: Any) -> list[tuple[str, bytes]]:
    if not headers:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return [(k, v) for k, v in headers]
