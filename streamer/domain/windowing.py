"""Per-user windows of pending events.

A user's window opens with its first pending event and closes when it holds ``max_events``
events or its oldest event has waited ``max_age_s``.  At most one update per user is in flight:
events arriving meanwhile join the user's next window, and a failed update hands its events back
to the front of the pending window, so nothing is lost and versions stay ordered.

Time is passed in by the caller (``now``), so the logic is pure and deterministic: the worker uses
a monotonic clock, the replay command uses event time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from schemas import Interaction

H = TypeVar("H")  # opaque per-event handle (e.g. the Kafka message to acknowledge)


def window_id(user_id: str, event_ids: Iterable[str]) -> str:
    """Idempotency key of a window: the same user and events always give the same id."""
    digest = hashlib.sha256(user_id.encode())
    for event_id in event_ids:
        digest.update(b"\x00" + event_id.encode())
    return digest.hexdigest()[:32]


@dataclass(slots=True)
class _Pending(Generic[H]):
    events: list[Interaction] = field(default_factory=list)
    handles: list[H] = field(default_factory=list)
    opened_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Window(Generic[H]):
    """A closed window, handed to exactly one update."""

    user_id: str
    events: tuple[Interaction, ...]
    handles: tuple[H, ...]
    opened_at: float

    @property
    def event_ids(self) -> tuple[str, ...]:
        return tuple(e.event_id for e in self.events)

    @property
    def window_id(self) -> str:
        return window_id(self.user_id, self.event_ids)


class WindowBook(Generic[H]):
    """All pending windows of one worker, keyed by user id."""

    def __init__(self, *, max_events: int, max_age_s: float) -> None:
        if max_events < 1:
            raise ValueError("max_events must be >= 1")
        if max_age_s < 0:
            raise ValueError("max_age_s must be >= 0")
        self.max_events = max_events
        self.max_age_s = max_age_s
        self._pending: dict[str, _Pending[H]] = {}
        self._in_flight: dict[str, Window[H]] = {}
        self._ids: dict[str, set[str]] = {}  # event ids pending or in flight, per user
        self._hold_until: dict[str, float] = {}  # users backing off after a failed update
        self._n_pending = 0
        self._dup_handles: dict[tuple[str, str], list[H]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def pending_events(self) -> int:
        """Events waiting in windows (not in flight), O(1)."""
        return self._n_pending

    def add(self, event: Interaction, handle: H, now: float) -> bool:
        """Add an event to its user's window.

        Returns False when the same event id is already pending or in flight for that user (a
        duplicate delivery).  The duplicate's handle is kept with the original event and handed
        out by :meth:`complete` once that event is applied: acknowledging it earlier could commit
        an offset (a redelivery has the same one) whose event is not stored yet.
        """
        ids = self._ids.setdefault(event.user_id, set())
        if event.event_id in ids:
            self._dup_handles.setdefault((event.user_id, event.event_id), []).append(handle)
            return False
        ids.add(event.event_id)
        pending = self._pending.get(event.user_id)
        if pending is None:
            pending = self._pending[event.user_id] = _Pending(opened_at=now)
        pending.events.append(event)
        pending.handles.append(handle)
        self._n_pending += 1
        return True

    def has_user(self, user_id: str) -> bool:
        """True while the user has pending or in-flight events."""
        return user_id in self._pending or user_id in self._in_flight

    def is_due(self, user_id: str, now: float) -> bool:
        """True when the user's window is closed and no update for the user is in flight."""
        pending = self._pending.get(user_id)
        if pending is None or user_id in self._in_flight:
            return False
        if now < self._hold_until.get(user_id, float("-inf")):
            return False
        return len(pending.events) >= self.max_events or now - pending.opened_at >= self.max_age_s

    def due(self, now: float) -> list[str]:
        """Users whose window is closed and can start an update, oldest window first."""
        ready = [u for u in self._pending if self.is_due(u, now)]
        ready.sort(key=lambda u: self._pending[u].opened_at)
        return ready

    def all_users(self) -> list[str]:
        """Users with pending events and no update in flight (used for a final flush)."""
        return [u for u in self._pending if u not in self._in_flight]

    def take(self, user_id: str) -> Window[H]:
        """Close the user's window and mark an update in flight (at most ``max_events``)."""
        if user_id in self._in_flight:
            raise RuntimeError(f"an update for user {user_id!r} is already in flight")
        pending = self._pending.pop(user_id)
        n = self.max_events
        window = Window(
            user_id=user_id,
            events=tuple(pending.events[:n]),
            handles=tuple(pending.handles[:n]),
            opened_at=pending.opened_at,
        )
        if len(pending.events) > n:  # overflow stays pending, in order
            self._pending[user_id] = _Pending(pending.events[n:], pending.handles[n:], pending.opened_at)
        self._n_pending -= len(window.events)
        self._in_flight[user_id] = window
        return window

    def complete(self, window: Window[H]) -> list[H]:
        """The window's update is stored and published: forget its events.

        Returns the handles of duplicate deliveries of those events, now safe to acknowledge.
        """
        self._in_flight.pop(window.user_id, None)
        self._hold_until.pop(window.user_id, None)
        ids = self._ids.get(window.user_id)
        if ids is not None:
            ids.difference_update(window.event_ids)
            if not ids:
                del self._ids[window.user_id]
        extra: list[H] = []
        for event_id in window.event_ids:
            extra.extend(self._dup_handles.pop((window.user_id, event_id), ()))
        return extra

    def give_back(self, window: Window[H], *, retry_at: float | None = None) -> None:
        """The update did not happen: the events go back in front of the pending window.

        With ``retry_at`` the user's window is not due again before that time (backoff).
        """
        self._in_flight.pop(window.user_id, None)
        if retry_at is not None:
            self._hold_until[window.user_id] = retry_at
        self._n_pending += len(window.events)
        pending = self._pending.get(window.user_id)
        if pending is None:
            self._pending[window.user_id] = _Pending(
                list(window.events), list(window.handles), window.opened_at
            )
        else:
            pending.events[:0] = window.events
            pending.handles[:0] = window.handles
            pending.opened_at = min(pending.opened_at, window.opened_at)

    def drop_users(self, user_ids: Any) -> int:
        """Forget pending (not in-flight) windows, e.g. of partitions revoked in a rebalance."""
        dropped = 0
        for user_id in list(user_ids):
            pending = self._pending.pop(user_id, None)
            if pending is not None:
                dropped += len(pending.events)
                self._n_pending -= len(pending.events)
                for e in pending.events:
                    self._dup_handles.pop((user_id, e.event_id), None)
                ids = self._ids.get(user_id, set())
                ids.difference_update(e.event_id for e in pending.events)
        return dropped

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._pending))
