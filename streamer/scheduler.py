"""Drives windows through the update service with bounded concurrency and backpressure.

Shared by the Kafka worker and the replay command.  ``offer`` blocks while all update slots are
busy and a new window is due, so the caller (the stream) stops pulling events instead of
buffering without bound; events of a user whose update is in flight wait in that user's next
window.  A failed update gives its events back (with a backoff) so nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from schemas import Interaction

from .domain.windowing import Window, WindowBook
from .errors import StreamerError, TransientError, VersionConflictError
from .service import Outcome, ProfileUpdater, UpdateResult

log = logging.getLogger(__name__)

H = TypeVar("H")


@dataclass(frozen=True, slots=True)
class Finished(Generic[H]):
    """A window whose update ended: ``result`` on success, ``error`` when it will be retried."""

    window: Window[H]
    result: UpdateResult | None
    error: BaseException | None
    duplicate_handles: tuple[H, ...] = ()

    @property
    def completed(self) -> bool:
        """True when the window's events are done with (acknowledge them); False when they
        went back to the user's pending window for a retry."""
        return self.result is not None and self.result.outcome is not Outcome.REJECTED_OUTPUT


class WindowScheduler(Generic[H]):
    def __init__(
        self,
        book: WindowBook[H],
        updater: ProfileUpdater,
        *,
        max_concurrency: int,
        clock: Callable[[], float],
        on_finished: Callable[[Finished[H]], None] = lambda f: None,
        retry_backoff_s: float = 2.0,
        max_pending_events: int = 100_000,
        window_trace: Callable[[Window[H]], Any] | None = None,
    ) -> None:
        self.window_trace = window_trace  # transport trace info passed to ``updater.apply``
        self.book = book
        self.max_pending_events = max_pending_events
        self._healthy = asyncio.Event()
        self._healthy.set()
        self.degraded_reason: str | None = None
        self.closing = False
        self.updater = updater
        self.clock = clock
        self.on_finished = on_finished
        self.retry_backoff_s = retry_backoff_s
        self._slots = asyncio.Semaphore(max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self.max_concurrency = max_concurrency

    @property
    def busy(self) -> int:
        return len(self._tasks)

    @property
    def saturated(self) -> bool:
        return self._slots.locked()

    @property
    def degraded(self) -> bool:
        """True while a dependency (store, model pool, broker) is failing updates."""
        return not self._healthy.is_set()

    async def _admit(self) -> None:
        """Backpressure on intake: wait while a dependency is down or too much is pending.

        The stream stops pulling events (the broker keeps them) instead of buffering without
        bound; windows already pending are retried by ``tick`` and the first success reopens
        intake.
        """
        while self.degraded or self.book.pending_events() >= self.max_pending_events:
            if self.degraded:
                await self._healthy.wait()
            else:
                await asyncio.sleep(0.05)

    async def offer(self, event: Interaction, handle: H, now: float | None = None) -> bool:
        """Add an event to its user's window and start the update if the window closed.

        Blocks while intake is closed (see :meth:`_admit`).  Returns False for a duplicate of an
        event already pending or in flight.
        """
        await self._admit()
        now = self.clock() if now is None else now
        added = self.book.add(event, handle, now)
        if added and self.book.is_due(event.user_id, now):
            await self._launch(event.user_id, now)
        return added

    async def tick(self, now: float | None = None) -> int:
        """Start updates for every window closed by age; returns how many started."""
        now = self.clock() if now is None else now
        started = 0
        due = self.book.due(now)
        if self.degraded:  # probe with one window instead of hammering a failing dependency
            due = due[:1] if not self._tasks else []
        for user_id in due:
            if self._slots.locked():  # saturated: the next tick (or a finishing update) goes on
                break
            if await self._launch(user_id, now):
                started += 1
        return started

    async def _launch(self, user_id: str, now: float) -> bool:
        if self.closing:
            return False
        await self._slots.acquire()  # backpressure: wait for a free update slot
        if not self.book.is_due(user_id, now):  # state may have moved while we waited
            self._slots.release()
            return False
        window = self.book.take(user_id)
        task = asyncio.create_task(self._run(window), name=f"update-{window.window_id[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, window: Window[H]) -> None:
        try:
            if self.window_trace is not None:
                result = await self.updater.apply(window.user_id, window.events,
                                                  trace=self.window_trace(window))
            else:
                result = await self.updater.apply(window.user_id, window.events)
        except (TransientError, VersionConflictError, OSError) as exc:
            log.warning("update failed (%s: %s); events kept for retry", type(exc).__name__, exc)
            self._degrade(f"{type(exc).__name__}: {exc}")
            self.book.give_back(window, retry_at=self.clock() + self.retry_backoff_s)
            self.on_finished(Finished(window, None, exc))
        except StreamerError as exc:  # permanent for this attempt (e.g. a refused request)
            log.warning("update failed (%s: %s); events kept for retry", type(exc).__name__, exc)
            self.book.give_back(window, retry_at=self.clock() + self.retry_backoff_s)
            self.on_finished(Finished(window, None, exc))
        except Exception as exc:  # unknown failure: keep the events, stop intake, surface loudly
            log.exception("unexpected error in update; events kept for retry")
            self._degrade(f"unexpected {type(exc).__name__}: {exc}")
            self.book.give_back(window, retry_at=self.clock() + self.retry_backoff_s)
            self.on_finished(Finished(window, None, exc))
        else:
            self._recover()
            extra: list[H] = []
            if result.outcome is Outcome.REJECTED_OUTPUT:
                self.book.give_back(window, retry_at=self.clock() + self.retry_backoff_s)
            else:
                extra = self.book.complete(window)
            self.on_finished(Finished(window, result, None, tuple(extra)))
        finally:
            self._slots.release()

    def _degrade(self, reason: str) -> None:
        if not self.degraded:
            log.error("dependency failing, pausing intake until it recovers: %s", reason)
        self.degraded_reason = reason
        self._healthy.clear()

    def _recover(self) -> None:
        if self.degraded:
            log.info("dependency recovered, resuming intake")
        self.degraded_reason = None
        self._healthy.set()

    async def drain(self, timeout_s: float) -> bool:
        """Stop starting updates and wait up to ``timeout_s`` for those in flight (graceful
        shutdown).  Pending windows are handed back: their events are not acknowledged, so the
        partition's next owner replays them.  Returns True when nothing was left in flight."""
        self.closing = True
        self._healthy.set()  # release a blocked intake so the stream can stop
        if not self._tasks:
            return True
        done, pending = await asyncio.wait(list(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        return not pending

    async def flush(self, *, timeout_s: float | None = None, max_rounds: int = 5) -> None:
        """Close every pending window now and wait until all updates ended (end of replay,
        graceful shutdown).  Windows that still fail after ``max_rounds`` stay pending."""

        async def _all() -> None:
            for _ in range(max_rounds):
                for user_id in self.book.all_users():
                    pending_now = float("inf")
                    if self.book.is_due(user_id, pending_now):
                        await self._launch(user_id, pending_now)
                if self._tasks:
                    await asyncio.gather(*list(self._tasks), return_exceptions=True)
                    continue
                if not any(self.book.is_due(u, float("inf")) for u in self.book.all_users()):
                    return

        await asyncio.wait_for(_all(), timeout_s)

    async def wait_idle(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
