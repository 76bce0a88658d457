"""Cassandra implementation of :class:`~streamer.ports.PendingBuffer` (see migration 0003).

Plain writes only (no lightweight transactions): the buffer is idempotent by its key, and the
partition index (``pending_users``) is ordered by client-supplied write timestamps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.cluster import Cluster, Session
from cassandra.query import BatchStatement, BatchType

from ...ports import ParkedWindow, PendingEntry, PendingUser
from .store import _execute

_ENTRY = ("event_id, digest, kafka_partition, kafka_offset, value, buffered_at, tokens, "
          "traceparent, kafka_ts")
_BATCH_ROWS = 200  # rows per single-partition unlogged batch...
_BATCH_BYTES = 4 << 20  # ...and bytes (well under Cassandra's 16 MB mutation limit)


def _ts(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _secs(d: datetime) -> float:
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


class CassandraPendingBuffer:
    def __init__(self, session: Session, keyspace: str, *, cluster: Cluster | None = None,
                 concurrency: int = 64) -> None:
        self._session = session
        self._cluster = cluster
        self._sem = asyncio.Semaphore(concurrency)
        ks = keyspace
        prep = session.prepare
        self._put = prep(f"INSERT INTO {ks}.pending_events (user_id, {_ENTRY}) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        self._read = prep(f"SELECT {_ENTRY} FROM {ks}.pending_events WHERE user_id = ?")
        self._del = prep(f"DELETE FROM {ks}.pending_events WHERE user_id = ? AND event_id = ? "
                         "AND digest = ?")
        self._user_put = prep(f"INSERT INTO {ks}.pending_users (kafka_partition, user_id, first_at)"
                              " VALUES (?, ?, ?) USING TIMESTAMP ?")
        self._user_del = prep(f"DELETE FROM {ks}.pending_users USING TIMESTAMP ? "
                              "WHERE kafka_partition = ? AND user_id = ?")
        self._users = prep(f"SELECT user_id, first_at FROM {ks}.pending_users "
                           "WHERE kafka_partition = ?")
        self._park = prep(
            f"INSERT INTO {ks}.parked_windows (user_id, window_id, kafka_partition, error_type, "
            "reason, attempts, parked_at, event_ids, digests, offsets, values) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        cols = ("user_id, window_id, kafka_partition, error_type, reason, attempts, parked_at, "
                "event_ids, digests, offsets, values")
        self._parked_user = prep(f"SELECT {cols} FROM {ks}.parked_windows WHERE user_id = ?")
        self._parked_all = prep(f"SELECT {cols} FROM {ks}.parked_windows LIMIT ?")
        self._unpark = prep(f"DELETE FROM {ks}.parked_windows WHERE user_id = ? AND window_id = ?")
        self._forget_events = prep(f"DELETE FROM {ks}.pending_events WHERE user_id = ?")
        self._forget_parked = prep(f"DELETE FROM {ks}.parked_windows WHERE user_id = ?")
        for stmt in (self._put, self._read, self._del, self._user_put, self._user_del,
                     self._users, self._park, self._parked_user, self._parked_all, self._unpark,
                     self._forget_events, self._forget_parked):
            stmt.consistency_level = ConsistencyLevel.LOCAL_QUORUM

    @classmethod
    def from_store(cls, store: Any) -> CassandraPendingBuffer:
        """Share the profile store's session (one connection pool per worker)."""
        return cls(store._session, store.keyspace)

    async def _run(self, statement: Any, params: Sequence[Any] = ()) -> list[Any]:
        async with self._sem:
            return await _execute(self._session, statement, params)

    async def add(self, entries: Sequence[PendingEntry], new_users: Sequence[PendingUser],
                  *, stamp_us: int) -> None:
        by_user: dict[str, list[PendingEntry]] = {}
        for e in entries:
            by_user.setdefault(e.user_id, []).append(e)
        jobs = []
        for rows in by_user.values():
            for chunk in _chunks(rows):
                if len(chunk) == 1:
                    jobs.append(self._run(self._put, self._values(chunk[0])))
                    continue
                batch = BatchStatement(batch_type=BatchType.UNLOGGED,
                                       consistency_level=ConsistencyLevel.LOCAL_QUORUM)
                for e in chunk:
                    batch.add(self._put, self._values(e))
                jobs.append(self._run(batch))
        for u in new_users:
            jobs.append(self._run(self._user_put, (u.partition, u.user_id, _ts(u.first_at),
                                                   stamp_us)))
        await _gather(jobs)

    @staticmethod
    def _values(e: PendingEntry) -> tuple[Any, ...]:
        return (e.user_id, e.event_id, e.digest, e.partition, e.offset, e.value,
                _ts(e.buffered_at), e.tokens, e.traceparent or None, e.kafka_ts)

    async def read(self, user_id: str, limit: int) -> list[PendingEntry]:
        """The ``limit`` oldest pending entries by input offset.  The partition is clustered by
        event id, so the whole (bounded) window is read, every page, and sorted here."""
        rows = await self._run(self._read, (user_id,))
        out = [PendingEntry(user_id, r.event_id, r.digest, r.kafka_partition, r.kafka_offset,
                            bytes(r.value), _secs(r.buffered_at), r.tokens or 0,
                            r.traceparent or "", r.kafka_ts or 0.0) for r in rows]
        out.sort(key=lambda e: (e.offset, e.event_id))
        return out[:limit]

    async def remove(self, user_id: str, entries: Sequence[PendingEntry], *,
                     user_done: PendingUser | None, stamp_us: int) -> None:
        jobs = []
        for i in range(0, len(entries), _BATCH_ROWS):
            batch = BatchStatement(batch_type=BatchType.UNLOGGED,
                                   consistency_level=ConsistencyLevel.LOCAL_QUORUM)
            for e in entries[i:i + _BATCH_ROWS]:
                batch.add(self._del, (user_id, e.event_id, e.digest))
            jobs.append(self._run(batch))
        if user_done is not None:
            jobs.append(self._run(self._user_del, (stamp_us, user_done.partition, user_id)))
        await _gather(jobs)

    async def users(self, partitions: Sequence[int]) -> list[PendingUser]:
        results = await _gather([self._run(self._users, (p,)) for p in partitions])
        return [PendingUser(r.user_id, p, _secs(r.first_at))
                for p, rows in zip(partitions, results, strict=True) for r in rows]

    async def park(self, window: ParkedWindow) -> None:
        es = window.entries
        await self._run(self._park, (
            window.user_id, window.window_id, window.partition, window.error_type,
            window.reason[:2000], window.attempts, _ts(window.parked_at),
            [e.event_id for e in es], [e.digest for e in es], [e.offset for e in es],
            [e.value for e in es]))

    async def parked(self, user_id: str | None = None, limit: int = 100) -> list[ParkedWindow]:
        if user_id is not None:
            rows = await self._run(self._parked_user, (user_id,))
        else:
            rows = await self._run(self._parked_all, (limit,))
        out = []
        for r in rows[:limit]:
            entries = tuple(
                PendingEntry(r.user_id, eid, dg, r.kafka_partition, off, bytes(val),
                             _secs(r.parked_at))
                for eid, dg, off, val in zip(r.event_ids or (), r.digests or (),
                                             r.offsets or (), r.values or (), strict=False))
            out.append(ParkedWindow(r.user_id, r.window_id, r.kafka_partition, r.error_type,
                                    r.reason, r.attempts, _secs(r.parked_at), entries))
        return out

    async def unpark(self, user_id: str, window_id: str) -> None:
        await self._run(self._unpark, (user_id, window_id))

    async def forget(self, user_id: str, *, partitions: Sequence[int], stamp_us: int) -> int:
        """Delete the user's pending events, its pending-user index rows (in ``partitions``:
        the partitions its events were buffered from) and its parked windows.  Returns the
        pending and parked events removed."""
        pending = await self._run(self._read, (user_id,))
        parked = await self._run(self._parked_user, (user_id,))
        seen = {r.kafka_partition for r in pending} | {r.kafka_partition for r in parked}
        await _gather([
            self._run(self._forget_events, (user_id,)),
            self._run(self._forget_parked, (user_id,)),
            *(self._run(self._user_del, (stamp_us, p, user_id)) for p in seen | set(partitions)),
        ])
        return len(pending) + sum(len(r.event_ids or ()) for r in parked)

    async def aclose(self) -> None:
        if self._cluster is not None:
            await asyncio.to_thread(self._cluster.shutdown)


def _chunks(rows: list[PendingEntry]) -> list[list[PendingEntry]]:
    out: list[list[PendingEntry]] = []
    size = 0
    for e in rows:
        if not out or len(out[-1]) >= _BATCH_ROWS or size + len(e.value) > _BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(e)
        size += len(e.value)
    return out


async def _gather(jobs: list[Any]) -> list[Any]:
    """Run all; raise the first error only after every job ended (no orphan writes)."""
    results = await asyncio.gather(*jobs, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results
