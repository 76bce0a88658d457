"""The in-memory index of durable pending windows: a few numbers per pending user (pure, no I/O).

The events themselves live in the durable pending buffer (a store); this index only decides
*when* a user's window is due and in which order due windows are started.  It holds, per user,
the Kafka partition, a count, a token estimate, the wall-clock time of the oldest pending event,
and retry state.  Its memory is O(pending users), independent of window length.

A window is due when the user has pending events, no update in flight, is not backing off, the
per-user minimum interval since its last update has passed, and one of these holds:

* ``count >= max_events``;
* ``tokens >= max_tokens`` (the estimated size of the rendered window);
* ``now - first_at >= max_age_s``.

Due windows are started longest-waiting first (smallest ``first_at``).  Two lazy heaps keep this
O(log n) per change: ``_timers`` by due time, ``_ready`` by ``first_at``.

Time is passed in (``now``, seconds): wall clock in the worker (so that a new partition owner,
rebuilding from the buffer's ``first_at`` stamps, fires overdue windows at once), event time in
the replay command.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(slots=True)
class UserWindow:
    partition: int
    count: int = 0
    tokens: int = 0
    first_at: float = 0.0
    in_flight: bool = False
    taken: int = 0  # events pending when the in-flight update started
    taken_tokens: int = 0
    taken_first_at: float = 0.0
    attempts: int = 0  # failed attempts of the current window
    hold_until: float = 0.0
    last_update_at: float = float("-inf")
    gen: int = 0


@dataclass(frozen=True, slots=True)
class WindowRules:
    """When a window closes (built from ``STREAMER_WINDOW__*`` by the composition root)."""

    max_events: int
    max_age_s: float
    max_tokens: int | None = None
    min_interval_s: float = 0.0

    def __post_init__(self) -> None:
        if self.max_events < 1:
            raise ValueError("max_events must be >= 1")
        if self.max_age_s < 0 or self.min_interval_s < 0:
            raise ValueError("max_age_s and min_interval_s must be >= 0")


class PendingIndex:
    """Which users have durable pending events, and when each one's window is due."""

    def __init__(self, rules: WindowRules) -> None:
        self.rules = rules
        self._users: dict[str, UserWindow] = {}
        self._timers: list[tuple[float, int, str, int]] = []
        self._ready: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()
        self._events = 0  # pending events not in flight
        self.in_flight = 0

    # -- queries -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, user_id: str) -> bool:
        return user_id in self._users

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._users))

    def get(self, user_id: str) -> UserWindow | None:
        return self._users.get(user_id)

    def pending_events(self) -> int:
        """Pending events not in flight (an estimate after a rebuild, see :meth:`recover`)."""
        return self._events

    def oldest_first_at(self) -> float | None:
        """``first_at`` of the longest-waiting pending window (O(users); for scrapes only)."""
        stamps = [w.first_at for w in self._users.values() if w.count > 0]
        return min(stamps) if stamps else None

    def users_of(self, partitions: Iterable[int]) -> list[str]:
        wanted = set(partitions)
        return [u for u, w in self._users.items() if w.partition in wanted]

    def due_at(self, w: UserWindow) -> float | None:
        """When the window is due (None: never, until something changes)."""
        if w.in_flight or w.count <= 0:
            return None
        r = self.rules
        gate = max(w.hold_until, w.last_update_at + r.min_interval_s)
        full = w.count >= r.max_events or (r.max_tokens is not None and w.tokens >= r.max_tokens)
        return gate if full else max(gate, w.first_at + r.max_age_s)

    # -- changes -------------------------------------------------------------------------------

    def add(self, user_id: str, partition: int, *, count: int = 1, tokens: int = 0,
            now: float) -> bool:
        """Record ``count`` newly buffered events of a user; True when the user was not pending
        before (the caller records it durably for a future partition owner)."""
        w = self._users.get(user_id)
        new = w is None
        if w is None:
            w = self._users[user_id] = UserWindow(partition=partition, first_at=now)
        elif w.count <= 0:
            w.first_at = now
        w.partition = partition
        w.count += count
        w.tokens += tokens
        self._events += count  # pending, not in flight (even while the user's update runs)
        self._schedule(user_id, w)
        return new

    def recover(self, user_id: str, partition: int, first_at: float) -> None:
        """A user found in the durable buffer by a new partition owner.  Its event count is not
        known without reading the events: it counts as one, so the window closes by age.
        (Retry state and the last update time are not carried over a rebalance.)"""
        if user_id in self._users:
            return
        self._users[user_id] = w = UserWindow(partition=partition, count=1, first_at=first_at)
        self._events += 1
        self._schedule(user_id, w)

    def pop_due(self, now: float, limit: int) -> list[str]:
        """Up to ``limit`` due users, longest-waiting first; they are not marked in flight."""
        timers, ready = self._timers, self._ready
        while timers and timers[0][0] <= now:
            _, _, user_id, gen = heapq.heappop(timers)
            w = self._users.get(user_id)
            if w is not None and w.gen == gen:
                heapq.heappush(ready, (w.first_at, next(self._seq), user_id, gen))
        out: list[str] = []
        while ready and len(out) < limit:
            _, _, user_id, gen = heapq.heappop(ready)
            w = self._users.get(user_id)
            if w is None or w.gen != gen:
                continue
            due = self.due_at(w)
            if due is None:
                continue
            if due > now:  # changed since it became ready (a failure set a hold)
                self._schedule(user_id, w)
                continue
            out.append(user_id)
            w.gen += 1  # consumed: `take` or `_schedule` re-arms it
        return out

    def requeue(self, user_id: str) -> None:
        """Put a user returned by :meth:`pop_due` but not started back in line."""
        w = self._users.get(user_id)
        if w is not None:
            self._schedule(user_id, w)

    def take(self, user_id: str) -> UserWindow:
        """An update for the user starts: its pending events are now in flight."""
        w = self._users[user_id]
        if w.in_flight:
            raise RuntimeError(f"an update for user {user_id!r} is already in flight")
        w.in_flight = True
        w.taken, w.taken_tokens, w.taken_first_at = w.count, w.tokens, w.first_at
        self._events -= w.count
        w.count = w.tokens = 0
        w.gen += 1
        self.in_flight += 1
        return w

    def done(self, user_id: str, applied: int, *, more: bool, now: float,
             arrived_before_read: int | None = None) -> bool:
        """The in-flight update applied (or parked) ``applied`` events.  ``more``: the buffer
        still holds events that were pending when it started (it read a capped batch).
        ``arrived_before_read``: how many events arrived after the update started and before
        its buffer read returned (the only arrivals it can have read).
        Returns True when the user has nothing pending any more (its index entry is gone)."""
        w = self._users[user_id]
        self._land(w)
        w.attempts = 0
        w.hold_until = 0.0
        w.last_update_at = now
        extra = applied - w.taken
        if arrived_before_read is not None:
            extra = min(extra, arrived_before_read)
        if extra > 0:  # the update also read events that arrived while it was starting
            take = min(extra, w.count)
            w.tokens = max(0, w.tokens - w.tokens * take // max(1, w.count))
            w.count -= take
            self._events -= take
        if more:
            left = max(1, w.taken - applied)
            w.count += left
            w.tokens += max(0, w.taken_tokens * left // max(1, w.taken))
            w.first_at = w.taken_first_at
            self._events += left
        if w.count <= 0:
            del self._users[user_id]
            return True
        self._schedule(user_id, w)
        return False

    def failed(self, user_id: str, *, retry_at: float) -> int:
        """The in-flight update failed and will be retried at ``retry_at``; returns the number
        of failed attempts so far."""
        w = self._put_back(user_id, hold_until=retry_at)
        w.attempts += 1
        return w.attempts

    def defer(self, user_id: str, *, until: float) -> None:
        """The in-flight update applied nothing and is due again at ``until`` (it waits for
        something, e.g. catalog items within their grace period); not a failed attempt."""
        self._put_back(user_id, hold_until=until)

    def hold(self, user_id: str, *, until: float) -> None:
        """A pending (not in-flight) window is not due before ``until``."""
        w = self._users.get(user_id)
        if w is not None and not w.in_flight:
            w.hold_until = max(w.hold_until, until)
            self._schedule(user_id, w)

    def _put_back(self, user_id: str, *, hold_until: float) -> UserWindow:
        w = self._users[user_id]
        self._land(w)
        w.count += w.taken
        w.tokens += w.taken_tokens
        w.first_at = min(w.first_at, w.taken_first_at) if w.count > w.taken else w.taken_first_at
        self._events += w.taken
        w.hold_until = hold_until
        self._schedule(user_id, w)
        return w

    def forget(self, user_ids: Iterable[str]) -> int:
        """Drop users (their partition was revoked); returns the pending events forgotten."""
        dropped = 0
        for user_id in list(user_ids):
            w = self._users.pop(user_id, None)
            if w is None:
                continue
            if w.in_flight:
                self.in_flight -= 1
            dropped += w.count
            self._events -= w.count
        return dropped

    def _land(self, w: UserWindow) -> None:
        if not w.in_flight:
            raise RuntimeError("no update in flight")
        w.in_flight = False
        self.in_flight -= 1

    def _schedule(self, user_id: str, w: UserWindow) -> None:
        w.gen += 1
        due = self.due_at(w)
        if due is not None:
            heapq.heappush(self._timers, (due, next(self._seq), user_id, w.gen))


class TokenBucket:
    """A tokens-per-second budget with ``burst`` tokens of headroom (pure; time passed in).

    A window costing more than the whole burst may start once the bucket is full (it then goes
    negative and later windows wait), so no window is starved by its size."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.burst = burst if burst is not None else rate
        self.level = self.burst
        self._at: float | None = None

    def _refill(self, now: float) -> None:
        if self._at is not None and now > self._at:
            self.level = min(self.burst, self.level + (now - self._at) * self.rate)
        self._at = now if self._at is None else max(self._at, now)

    def take(self, cost: float, now: float) -> bool:
        self._refill(now)
        if self.level >= min(cost, self.burst):
            self.level -= cost
            return True
        return False
