"""Benchmark 5 (scale): per-update time and per-user memory of the worker's in-process state
(``UpdateFlow`` + ``WindowBook``) from 100 to 100,000 tracked users.  No servers: the updater is
a no-op, so what is measured is the worker's own bookkeeping (decode, window, schedule, ack)."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from .common import say

HUGE = 20 * 365 * 86400


@dataclass(frozen=True)
class _TP:
    topic: str
    partition: int


class _Message:
    __slots__ = ("key", "value", "topic", "partition", "offset", "headers", "tp")

    def __init__(self, key: bytes, value: bytes, tp: _TP, offset: int) -> None:
        self.key, self.value, self.tp, self.offset = key, value, tp, offset
        self.topic, self.partition, self.headers = tp.topic, tp.partition, None


class _Event:
    __slots__ = ("message", "acked")

    def __init__(self, message: _Message) -> None:
        self.message = message
        self.acked = False

    def ack(self) -> None:
        self.acked = True


class _NullUpdater:
    async def apply(self, user_id: str, events: Any, **_: Any):
        from streamer.service import Outcome, UpdateResult

        return UpdateResult(outcome=Outcome.UPDATED, user_id=user_id)


TPS = [_TP("bench.interactions.v1", p) for p in range(8)]


def _template() -> dict:
    from streamer.sample import generate_events

    return generate_events(1, 1, seed=5)[0]


def _message(tmpl: dict, user: int, seq: int) -> _Message:
    uid = f"scale-user-{user:07d}"
    e = dict(tmpl, user_id=uid, event_id=f"{uid}-evt-{seq:06d}")
    return _Message(uid.encode(), json.dumps(e, separators=(",", ":")).encode(),
                    TPS[user % len(TPS)], seq)


def _flow(max_events: int):
    from streamer.flows.update_profiles import UpdateFlow

    return UpdateFlow(_NullUpdater(), None, max_events=max_events, max_age_s=1e9,  # type: ignore[arg-type]
                      max_concurrency=64, max_message_bytes=1 << 20, max_pending_events=10**9,
                      max_event_age_s=HUGE, max_clock_skew_s=HUGE)


async def _drain(flow) -> None:
    await flow.scheduler.wait_idle()
    while flow.book.pending_events() and flow.book.max_events == 1:
        await flow.tick()  # windows that waited behind their user's update in flight
        await flow.scheduler.wait_idle()


async def _feed(flow, tmpl: dict, users, seq: int, desc: str | None = None) -> float:
    it = tqdm(users, desc=desc, unit="upd", file=sys.stdout, mininterval=1, leave=False) \
        if desc else users
    t0 = time.perf_counter()
    for i, u in enumerate(it):
        await flow.handle(_Event(_message(tmpl, u, seq)))
        if i % 512 == 511:
            await _drain(flow)
    await _drain(flow)
    return time.perf_counter() - t0


async def _one_size(n: int, tmpl: dict, extra_updates: int) -> dict:
    import random

    # time: n users each get one update (window of 1 event), then `extra_updates` more updates of
    # random already-tracked users
    flow = _flow(max_events=1)
    populate_s = await _feed(flow, tmpl, range(n), 1, f"{n} users: populate")
    rng = random.Random(n)
    picks = [rng.randrange(n) for _ in range(extra_updates)]
    seqs: dict[int, int] = {}
    t0 = time.perf_counter()
    for i, u in enumerate(picks):
        seqs[u] = seqs.get(u, 1) + 1
        await flow.handle(_Event(_message(tmpl, u, seqs[u])))
        if i % 512 == 511:
            await _drain(flow)
    await _drain(flow)
    steady_s = time.perf_counter() - t0
    if flow.stats.outcomes.get("updated", 0) != n + extra_updates:
        raise RuntimeError(f"not every window was updated: {flow.stats}")
    del flow
    # tick cost with n users holding an open (not yet due) window each
    flow = _flow(max_events=1000)
    await _feed(flow, tmpl, range(n), 1)
    t0 = time.perf_counter()
    ticks = 20
    for _ in range(ticks):
        await flow.tick()
    tick_ms = (time.perf_counter() - t0) / ticks * 1000
    del flow
    gc.collect()
    # memory (tracemalloc, a separate pass): idle tracked users and users with one pending event
    mem: dict[str, float] = {}
    for kind, max_events in (("idle", 1), ("pending_1_event", 1000)):
        gc.collect()
        tracemalloc.start()
        flow = _flow(max_events=max_events)
        gc.collect()
        m0 = tracemalloc.get_traced_memory()[0]
        await _feed(flow, tmpl, range(n), 1)
        gc.collect()
        m1 = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        mem[kind] = (m1 - m0) / n
        del flow
    return {
        "tracked_users": n,
        "populate_us_per_update": populate_s / n * 1e6,
        "steady_us_per_update": steady_s / extra_updates * 1e6,
        "steady_updates": extra_updates,
        "tick_ms_with_all_users_pending": tick_ms,
        "bytes_per_idle_user": mem["idle"],
        "bytes_per_pending_user_1_event": mem["pending_1_event"],
    }


async def bench_scale(sizes: list[int], extra_updates: int) -> dict:
    tmpl = _template()
    rows = []
    for n in sizes:
        say(f"scale: {n} tracked users")
        row = await _one_size(n, tmpl, extra_updates)
        say(f"  {row['steady_us_per_update']:.0f} us/update, "
            f"tick {row['tick_ms_with_all_users_pending']:.2f} ms (all pending), "
            f"{row['bytes_per_idle_user']:.0f} B/idle user, "
            f"{row['bytes_per_pending_user_1_event']:.0f} B/pending user")
        rows.append(row)
    largest = rows[-1]
    return {
        "what": ("in-process UpdateFlow.handle (decode + window + schedule + ack) with a no-op "
                 "updater; memory by tracemalloc of the flow's WindowBook and per-user dicts "
                 "(user_id -> TopicPartition kept after the update)"),
        "rows": rows,
        "bytes_per_idle_user": largest["bytes_per_idle_user"],
        "target_bytes_per_idle_user": 1024,
        "meets_target": largest["bytes_per_idle_user"] < 1024,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(bench_scale([100, 1000, 10000], 2000)), indent=1))
