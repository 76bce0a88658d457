"""An in-process :class:`~streamer.ports.PendingBuffer` (replay, demo, unit tests).

Same semantics as the Cassandra buffer (idempotent on (user, event id, digest), a partition
index whose writes are ordered by ``stamp_us``), but it lives only as long as the process."""

from __future__ import annotations

from collections.abc import Sequence

from ...ports import ParkedWindow, PendingEntry, PendingUser


class MemoryPendingBuffer:
    def __init__(self) -> None:
        self._events: dict[str, dict[tuple[str, str], PendingEntry]] = {}
        self._users: dict[tuple[int, str], tuple[int, PendingUser | None]] = {}
        self._parked: dict[tuple[str, str], ParkedWindow] = {}
        self.writes = 0

    async def add(self, entries: Sequence[PendingEntry], new_users: Sequence[PendingUser],
                  *, stamp_us: int) -> None:
        for e in entries:
            self._events.setdefault(e.user_id, {})[(e.event_id, e.digest)] = e
        for u in new_users:
            self._stamp(u.partition, u.user_id, stamp_us, u)
        self.writes += len(entries)

    async def read(self, user_id: str, limit: int) -> list[PendingEntry]:
        rows = sorted(self._events.get(user_id, {}).values(), key=lambda e: (e.offset, e.event_id))
        return rows[:limit]

    async def remove(self, user_id: str, entries: Sequence[PendingEntry], *,
                     user_done: PendingUser | None, stamp_us: int) -> None:
        rows = self._events.get(user_id, {})
        for e in entries:
            rows.pop((e.event_id, e.digest), None)
        if not rows:
            self._events.pop(user_id, None)
        if user_done is not None:
            self._stamp(user_done.partition, user_id, stamp_us, None)

    def _stamp(self, partition: int, user_id: str, stamp_us: int, value: PendingUser | None) -> None:
        key = (partition, user_id)
        old = self._users.get(key)
        if old is None or old[0] <= stamp_us:
            self._users[key] = (stamp_us, value)

    async def users(self, partitions: Sequence[int]) -> list[PendingUser]:
        wanted = set(partitions)
        return [u for (p, _), (_, u) in sorted(self._users.items()) if p in wanted and u is not None]

    async def park(self, window: ParkedWindow) -> None:
        self._parked[(window.user_id, window.window_id)] = window

    async def parked(self, user_id: str | None = None, limit: int = 100) -> list[ParkedWindow]:
        rows = [w for (u, _), w in sorted(self._parked.items()) if user_id in (None, u)]
        return rows[:limit]

    async def unpark(self, user_id: str, window_id: str) -> None:
        self._parked.pop((user_id, window_id), None)

    async def forget(self, user_id: str, *, partitions: Sequence[int], stamp_us: int) -> int:
        removed = len(self._events.pop(user_id, {}))
        for key in [k for k in self._parked if k[0] == user_id]:
            removed += len(self._parked.pop(key).entries)
        for partition, uid in list(self._users):
            if uid == user_id:
                self._stamp(partition, user_id, stamp_us, None)
        return removed

    def pending_count(self) -> int:
        return sum(len(v) for v in self._events.values())

    async def aclose(self) -> None:
        return None
