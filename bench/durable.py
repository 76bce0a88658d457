"""Benchmarks of the durable-windows design (issue "durable windows", item 11).

(a) ``bench_ingest``: sustained events/s of ``streamer worker`` into durable windows (no window
    closes, so no model call), side by side with a bare baseline doing the same essential work
    (aiokafka ``getmany``, JSON decode, the same pending-buffer writes at the same batch size and
    concurrency, pipelined the same way: one write in flight, later batches merged into the
    next; a commit per second) and with a bare consumer.
(c) ``bench_long_windows``: 100,000 users with 15-minute windows (MAX_AGE_S=900, real clock)
    on one worker: RSS, committed-offset lag while events flow, input re-read after a SIGKILL,
    and how fast the restarted worker rebuilds its pending windows.
(d) ``bench_overload``: offered load at 0.5x, 1x and 3x the model pool's capacity (one event per
    call): pool utilisation, model calls per event (falling as windows grow), nothing lost.
(e) ``bench_pending_users``: 1,000,000 users with one pending event each in one worker's intake
    and index (the buffer writes discarded): memory per pending user.

Numbers are measured, never asserted; ``bench/report.py`` writes them to SUMMARY.md.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from tqdm import tqdm

from .common import (
    BOOTSTRAP,
    CASSANDRA_PORT,
    HTTP,
    encode,
    ensure_topics,
    events,
    free_port,
    say,
    spawn,
    topics,
    wait_http,
    worker_env,
)
from .pool_fresh import pool_snapshot
from .stream_store import bare_consume, produce_all

INTAKE_BATCH = 500


def rss_kb(pid: int) -> int | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _stats(port: int) -> dict | None:
    try:
        return HTTP.get(f"http://127.0.0.1:{port}/stats", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return None


def _wait_stat(port: int, proc: Any, key: str, target: int, timeout_s: float,
               desc: str) -> list[tuple[float, int]]:
    """Poll ``/stats[key]`` until it reaches ``target``; returns (time, value) samples."""
    samples: list[tuple[float, int]] = []
    bar = tqdm(total=target, desc=desc, unit="ev", file=sys.stdout, mininterval=1)
    last = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        s = _stats(port)
        if s is not None:
            v = s.get(key, 0)
            samples.append((time.monotonic(), v))
            bar.update(max(0, v - last))
            last = v
            if v >= target:
                break
        if not proc.alive():
            raise RuntimeError(f"worker exited:\n{proc.log_tail()}")
        time.sleep(0.1)
    bar.close()
    return samples


def _rate(samples: list[tuple[float, int]]) -> float:
    """Events/s between the first sample with progress and the last one."""
    moving = [(t, v) for t, v in samples if v > 0]
    if len(moving) < 2:
        return 0.0
    (t0, v0), (t1, v1) = moving[0], moving[-1]
    return (v1 - v0) / (t1 - t0) if t1 > t0 else 0.0


# ------------------------------------------------------------------------------ (a) ingest


async def bare_buffered_consume(topic: str, n: int, keyspace: str) -> dict:
    """The essential work of intake without faust: getmany, decode, buffer writes, commits."""
    from streamer.adapters.cassandra.pending import CassandraPendingBuffer
    from streamer.adapters.cassandra.store import CassandraProfileStore
    from streamer.domain.codec import decode_interaction
    from streamer.ports import PendingEntry, PendingUser
    from streamer.services.flow import estimate_entry_tokens
    from streamer.services.scheduler import StampClock, digest
    from streamer.settings import CassandraSettings

    store = await asyncio.to_thread(CassandraProfileStore.from_settings, CassandraSettings(
        hosts=["127.0.0.1"], port=CASSANDRA_PORT, keyspace=keyspace))
    buffer = CassandraPendingBuffer.from_store(store)
    stamps = StampClock()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=f"bare-{keyspace}",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                max_poll_records=INTAKE_BATCH, isolation_level="read_committed")
    await consumer.start()
    seen: set[str] = set()
    count, t_first, t_last = 0, None, None
    # Pipelined as the worker's intake is (group commit): one buffer write in flight; batches
    # fetched and decoded meanwhile queue up and the next write takes them all; fetching waits
    # once 4 x INTAKE_BATCH rows are queued.  Commits carry only positions already buffered.
    queue: list[tuple[list, list, dict]] = []
    queued = 0
    written: dict[Any, int] = {}
    room = asyncio.Event()
    room.set()
    writer: asyncio.Task | None = None

    async def write_queued() -> None:
        nonlocal queue, queued, count, t_last
        try:
            while queue:
                batches, queue, queued = queue, [], 0
                room.set()
                rows: dict[tuple[str, str, str], Any] = {}
                users: list = []
                ends: dict[Any, int] = {}
                for batch_rows, batch_users, batch_ends in batches:
                    rows.update(((r.user_id, r.event_id, r.digest), r) for r in batch_rows)
                    users += batch_users
                    for tp, end in batch_ends.items():
                        ends[tp] = max(ends.get(tp, -1), end)
                await buffer.add(list(rows.values()), users, stamp_us=stamps())
                written.update(ends)
                count += len(rows)
                if count >= n and t_last is None:
                    t_last = time.monotonic()
        finally:
            room.set()

    t_start = time.monotonic()
    last_commit = t_start
    try:
        deadline = time.monotonic() + 600
        while count < n and time.monotonic() < deadline:
            while queued >= 4 * INTAKE_BATCH:
                room.clear()
                await room.wait()
            if writer is not None and writer.done():
                writer.result()  # a failed write stops the run
            batch = await consumer.getmany(timeout_ms=100, max_records=INTAKE_BATCH)
            rows, users, ends = [], [], {}
            now = time.time()
            for tp, msgs in batch.items():
                for m in msgs:
                    e = decode_interaction(m.key, m.value)
                    rows.append(PendingEntry(e.user_id, e.event_id, digest(m.value), m.partition,
                                             m.offset, m.value, now,
                                             estimate_entry_tokens(m.value)))
                    if e.user_id not in seen:
                        seen.add(e.user_id)
                        users.append(PendingUser(e.user_id, m.partition, now))
                if msgs:
                    ends[tp] = msgs[-1].offset + 1
            if rows:
                t_first = t_first or time.monotonic()
                queue.append((rows, users, ends))
                queued += len(rows)
                if writer is None or writer.done():
                    writer = asyncio.create_task(write_queued())
            if written and time.monotonic() - last_commit >= 1.0:
                await consumer.commit(dict(written))
                last_commit = time.monotonic()
        if writer is not None:
            await writer
        t_last = t_last or time.monotonic()
        if written:
            await consumer.commit(dict(written))
    finally:
        if writer is not None and not writer.done():
            writer.cancel()
        await consumer.stop()
        await store.aclose()
    return {"consumed": count, "seconds": round(t_last - t_start, 3),
            "events_per_s": count / (t_last - (t_first or t_start))}


async def bench_ingest(n_events: int, standin_url: str) -> dict:
    suffix = f"ingest{int(time.time())}"
    n_users = max(10, n_events // 20)
    say(f"ingest: generating {n_events} events ({n_users} users)")
    records = [encode(e) for e in events(n_users, 20, seed=3, prefix=suffix)[:n_events]]
    await ensure_topics(suffix)
    inp, _ = topics(suffix)
    await produce_all(inp, records, "produce")
    n = len(records)
    ks = f"bench_{suffix}"
    say("ingest: bare aiokafka consumer")
    bare1 = await bare_consume(inp, n, decode=False)
    say("ingest: bare baseline (getmany + decode + the same pending-buffer writes + commits)")
    base1 = await bare_buffered_consume(inp, n, f"{ks}_bare1")
    say("ingest: `streamer worker` (windows never close: no model call)")
    port = free_port()
    env = worker_env(suffix, [standin_url], port, STREAMER_WINDOW__MAX_EVENTS="100000000",
                     STREAMER_WINDOW__MAX_AGE_S="1000000000",
                     STREAMER_KAFKA__INTAKE_BATCH=str(INTAKE_BATCH))
    proc = spawn(f"worker-{suffix}", [sys.executable, "-m", "streamer", "worker"], env)
    try:
        wait_http(f"http://127.0.0.1:{port}/livez", 120, proc)
        samples = await asyncio.to_thread(_wait_stat, port, proc, "buffered", n, 600,
                                          "worker buffered")
        peak_rss = rss_kb(proc.popen.pid)
    finally:
        proc.stop()
    worker_rate = _rate(samples)
    say("ingest: bare baseline, run 2")
    base2 = await bare_buffered_consume(inp, n, f"{ks}_bare2")
    bare2 = await bare_consume(inp, n, decode=False)
    base_rate = statistics.mean([base1["events_per_s"], base2["events_per_s"]])
    bare_rate = statistics.mean([bare1["events_per_s"], bare2["events_per_s"]])
    ratio = worker_rate / base_rate if base_rate else 0.0
    say(f"ingest: worker {worker_rate:.0f} ev/s, bare buffered baseline {base_rate:.0f} ev/s -> "
        f"{ratio:.3f} (target >= 0.7); bare consumer {bare_rate:.0f} ev/s -> "
        f"{worker_rate / bare_rate:.3f}")
    return {"events": n, "users": n_users, "intake_batch": INTAKE_BATCH,
            "worker_events_per_s": worker_rate, "worker_rss_kb": peak_rss,
            "bare_buffered": [base1, base2], "bare_buffered_events_per_s": base_rate,
            "bare_consumer": [bare1, bare2], "bare_consumer_events_per_s": bare_rate,
            "ratio": ratio, "ratio_vs_bare_consumer": worker_rate / bare_rate if bare_rate else 0,
            "target": 0.7, "meets_target": ratio >= 0.7}


# ------------------------------------------------------------------------------ (c) long windows


async def _committed(group: str, topic: str) -> dict[int, int]:
    from tests.e2e.harness import committed_offsets

    try:
        return await committed_offsets(BOOTSTRAP, group, topic)
    except Exception:  # noqa: BLE001 - not committed yet
        return {}


async def _ends(topic: str) -> dict[int, int]:
    from tests.e2e.harness import end_offsets

    return await end_offsets(BOOTSTRAP, topic)


async def bench_long_windows(n_users: int, trickle_s: float, rate: float,
                             standin_url: str) -> dict:
    """100k users, 15-minute windows on the real clock: windows stay open for the whole run."""
    suffix = f"long{int(time.time())}"
    say(f"long windows: {n_users} users, MAX_AGE_S=900, one event each, then {rate:.0f} ev/s "
        f"for {trickle_s:.0f}s")
    first = [encode(e) for e in events(n_users, 1, seed=5, prefix=suffix)]
    more = [encode(e) for e in events(n_users, 3, seed=6, prefix=f"{suffix}b")]
    await ensure_topics(suffix)
    inp, _ = topics(suffix)
    group = f"bench-{suffix}"
    port = free_port()
    env = worker_env(suffix, [standin_url], port, STREAMER_WINDOW__MAX_EVENTS="1000",
                     STREAMER_WINDOW__MAX_AGE_S="900", STREAMER_KAFKA__COMMIT_INTERVAL_S="1.0",
                     STREAMER_KAFKA__GROUP_INSTANCE_ID=f"{suffix}-pod",
                     STREAMER_KAFKA__SESSION_TIMEOUT_S="10")
    proc = spawn(f"worker-{suffix}", [sys.executable, "-m", "streamer", "worker"], env)
    rss: list[int] = []
    lag_samples: list[float] = []  # steady state: age of the oldest uncommitted record
    restart_lag: list[float] = []  # the same, from the SIGKILL until the restarted member commits
    old_lag_samples: list[float] = []  # the previous, coarser definition (see below)
    produced_at: list[tuple[float, int]] = []  # (time, records produced so far)
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=10)
    await producer.start()
    try:
        wait_http(f"http://127.0.0.1:{port}/livez", 120, proc)
        await produce_all(inp, first, "first event of every user")
        await asyncio.to_thread(_wait_stat, port, proc, "buffered", len(first), 900,
                                "buffered (first events)")
        rss.append(rss_kb(proc.popen.pid) or 0)
        # steady trickle: sample the committed-offset lag in seconds while events flow; the
        # worker is SIGKILLed two thirds in, while events flow, and restarted in place
        total = len(first)
        t0 = time.monotonic()
        i = 0
        killed: dict[str, Any] = {}
        bar = tqdm(total=int(trickle_s), desc="trickle", unit="s", file=sys.stdout)
        while time.monotonic() - t0 < trickle_s and i < len(more):
            if not killed and time.monotonic() - t0 >= trickle_s * 2 / 3:
                killed = await _kill_and_restart(proc, port, group, inp, env, suffix)
                proc = killed.pop("proc")
            step = int(rate / 2)
            futs = [await producer.send(inp, v, key=k) for k, v in more[i:i + step]]
            await asyncio.gather(*futs)
            i += len(futs)
            total += len(futs)
            now = time.monotonic()
            produced_at.append((now, total))
            committed = sum((await _committed(group, inp)).values())
            # lag in seconds = the age of the oldest record produced but not committed (0 when
            # all are): a record produced at t is committed by t + lag.  Each step's records
            # are produced together, so the oldest uncommitted one is in the first step whose
            # running total exceeds the committed count.
            pending = [t for t, n in produced_at if n > committed]
            lag = now - pending[0] if pending else 0.0
            restarting = killed and committed <= killed["committed_at_kill"]
            (restart_lag if restarting else lag_samples).append(lag)
            # previous definition: how long ago the producer had produced as much as is
            # committed; it counts whole 0.5 s steps, so it reads up to one step high
            older = [t for t, n in produced_at if n <= committed]
            old_lag_samples.append(now - older[-1] if older else now - produced_at[0][0])
            rss.append(rss_kb(proc.popen.pid) or 0)
            bar.update(int(now - t0) - bar.n)
            await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - now)))
        bar.close()
        stats_before = killed.get("stats_before", {})
        stats_after = _stats(port) or {}
        rss.append(rss_kb(proc.popen.pid) or 0)
    finally:
        await producer.stop()
        proc.stop()
    return {
        "users": n_users, "max_age_s": 900, "clock": "real (windows stay open the whole run)",
        "trickle_events_per_s": rate,
        "events": total, "model_calls_during_run": 0 if not stats_before.get("outcomes") else
        sum(stats_before["outcomes"].values()),
        "model_calls_per_event": (sum((stats_before.get("outcomes") or {}).values()) / total),
        "worker_rss_kb_max": max(rss), "worker_rss_kb_samples": rss[::max(1, len(rss) // 20)],
        "committed_lag_s": {"median": statistics.median(lag_samples) if lag_samples else None,
                            "max": max(lag_samples) if lag_samples else None,
                            "samples": len(lag_samples),
                            "definition": "age of the oldest produced record not yet committed, "
                                          "sampled every 0.5 s, outside the SIGKILL restart"},
        "restart_lag_s": {"max": max(restart_lag) if restart_lag else None,
                          "samples": len(restart_lag),
                          "definition": "the same, from the SIGKILL until the restarted member "
                                        "commits past the offsets committed at the kill"},
        "committed_lag_s_previous_definition": {
            "median": statistics.median(old_lag_samples) if old_lag_samples else None,
            "max": max(old_lag_samples) if old_lag_samples else None,
            "definition": "how long ago the producer had produced as many records as are "
                          "committed (whole 0.5 s steps; includes the restart)"},
        "commit_interval_s": 1.0, "target_lag_s": 2.0,
        "meets_target": bool(lag_samples) and max(lag_samples) <= 2.0,
        "sigkill": {**killed, "pending_users_at_end": stats_after.get("pending_users")},
    }


async def _kill_and_restart(proc: Any, port: int, group: str, topic: str, env: dict[str, str],
                            suffix: str) -> dict[str, Any]:
    """SIGKILL the worker while events flow, restart it with the same static member id, and
    measure what it re-reads and how long until its pending windows are rebuilt."""
    stats_before = _stats(port) or {}
    consumed_before = stats_before.get("consumed", 0)
    pending_before = stats_before.get("pending_users", 0)
    committed_at_kill = sum((await _committed(group, topic)).values())
    proc.kill()
    t_kill = time.monotonic()
    say("long windows: SIGKILLed the worker mid-trickle; restarting it (same instance id)")
    proc = spawn(f"worker-{suffix}-2", [sys.executable, "-m", "streamer", "worker"], env)
    wait_http(f"http://127.0.0.1:{port}/livez", 120, proc)
    rebuilt_s = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and rebuilt_s is None:
        s = _stats(port) or {}
        if s.get("pending_users", 0) >= pending_before * 0.99:
            rebuilt_s = round(time.monotonic() - t_kill, 1)
        await asyncio.sleep(0.2)
    return {"proc": proc, "stats_before": stats_before, "consumed_before_kill": consumed_before,
            "committed_at_kill": committed_at_kill,
            # the restarted worker starts from the committed offsets: this is what it re-reads
            "records_reread_after_restart": max(0, consumed_before - committed_at_kill),
            "pending_users_before_kill": pending_before,
            "restart_to_pending_windows_rebuilt_s": rebuilt_s}


# ------------------------------------------------------------------------------ (d) overload


async def bench_overload(standin_url: str, *, slots: int, levels: tuple[float, ...],
                         duration_s: float, warmup_s: float) -> dict:
    """Offered events/s at ``level`` x the pool's capacity in calls/s: utilisation and calls
    per event.  The worker's model budget is exactly the pool's slots."""
    out: dict[str, Any] = {"levels": {}, "slots": slots}
    capacity = None
    for level in levels:
        suffix = f"over{int(level * 10)}x{int(time.time())}"
        res = await _overload_level(standin_url, suffix, slots=slots, level=level,
                                    capacity=capacity, duration_s=duration_s,
                                    warmup_s=warmup_s)
        capacity = capacity or res["capacity_calls_per_s"]
        out["levels"][str(level)] = res
        say(f"overload {level}x: utilisation {res['utilisation']:.3f}, calls/event "
            f"{res['calls_per_event']:.3f}, lost {res['lost']}")
    cpe = [out["levels"][str(lv)]["calls_per_event"] for lv in levels]
    top = out["levels"][str(max(levels))]
    out["calls_per_event_falling"] = all(a >= b for a, b in zip(cpe, cpe[1:], strict=False))
    out["utilisation_at_max_load"] = top["utilisation"]
    out["target_utilisation"] = 0.95
    out["nothing_lost"] = all(v["lost"] == 0 for v in out["levels"].values())
    out["meets_target"] = (top["utilisation"] >= 0.95 and out["calls_per_event_falling"]
                           and out["nothing_lost"])
    return out


async def _overload_level(url: str, suffix: str, *, slots: int, level: float,
                          capacity: float | None, duration_s: float, warmup_s: float) -> dict:
    from .pool_fresh import ChangeWatcher

    await ensure_topics(suffix)
    inp, outp = topics(suffix)
    port = free_port()
    env = worker_env(suffix, [url], port, STREAMER_WINDOW__MAX_EVENTS="4",
                     STREAMER_WINDOW__MAX_AGE_S="1", STREAMER_MODEL__MAX_CONCURRENCY=str(slots),
                     STREAMER_MODEL__MAX_CONCURRENCY_PER_ENDPOINT=str(slots),
                     STREAMER_SHUTDOWN_TIMEOUT_S="20")
    proc = spawn(f"worker-{suffix}", [sys.executable, "-m", "streamer", "worker"], env)
    watcher = ChangeWatcher(outp)
    await watcher.start()
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5)
    await producer.start()
    n_users = 2000
    pool = [encode(e) for e in events(n_users, 60, seed=int(level * 100), prefix=suffix,
                                      activity="zipf")]
    produced = 0
    try:
        wait_http(f"http://127.0.0.1:{port}/livez", 120, proc)
        s0 = pool_snapshot([url])
        t0 = time.monotonic()
        rate = (capacity or _probe_capacity(url, slots)) * level
        warm = None
        k = 0
        while time.monotonic() - t0 < duration_s and produced < len(pool):
            k += 1
            batch = pool[produced:produced + max(1, int(rate))]
            futs = [await producer.send(inp, v, key=key) for key, v in batch]
            await asyncio.gather(*futs)
            produced += len(batch)
            if warm is None and time.monotonic() - t0 >= warmup_s:
                warm = (time.monotonic(), pool_snapshot([url]), watcher.events)
            await asyncio.sleep(max(0.0, t0 + k - time.monotonic()))
        end = (time.monotonic(), pool_snapshot([url]), watcher.events)
        # drain: every produced event must be announced (nothing lost)
        ids = {e for e in _event_ids(pool[:produced])}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not ids <= watcher.seen.keys():
            await asyncio.sleep(0.5)
        lost = len(ids - watcher.seen.keys())
    finally:
        await producer.stop()
        proc.stop()
        await watcher.stop()
    assert warm is not None
    dt = end[0] - warm[0]
    d_ok = end[1]["ok"] - warm[1]["ok"]
    busy = _busy_s(warm[1], end[1])
    total_ok = end[1]["ok"] - s0["ok"]
    return {"level": level, "offered_events_per_s": rate, "measured_s": round(dt, 1),
            "events_produced": produced, "calls_ok": d_ok,
            "capacity_calls_per_s": capacity or rate / level,
            "utilisation": busy / (slots * dt) if dt else 0.0,
            "calls_per_event": total_ok / produced if produced else 0.0,
            "events_applied": len(ids) - lost, "lost": lost}


def _event_ids(records: list[tuple[bytes, bytes]]) -> list[str]:
    import json

    return [json.loads(v)["event_id"] for _k, v in records]


def _busy_s(a: dict, b: dict) -> float:
    """Slot-seconds the stand-in spent on successful calls between two snapshots (its latency
    model: time to first token per call + time per completion token)."""
    from .pool_fresh import STANDIN

    calls = b["ok"] - a["ok"]
    tokens = b["completion_tokens"] - a["completion_tokens"]
    return (calls * STANDIN["ttft_ms"] + tokens * STANDIN["per_token_ms"]) / 1000


def _probe_capacity(url: str, slots: int) -> float:
    from .pool_fresh import STANDIN

    service_s = (STANDIN["ttft_ms"] + STANDIN["per_token_ms"] * 200) / 1000
    return slots / service_s


# ------------------------------------------------------------------------------ (e) 1M users


class _NullBuffer:
    """Discards writes: isolates the worker's own per-user memory from the buffer's."""

    async def add(self, entries, new_users, *, stamp_us):
        return None

    async def users(self, partitions):
        return []


async def bench_pending_users(n_users: int) -> dict:
    from streamer.domain.pending import PendingIndex, WindowRules
    from streamer.services.flow import UpdateFlow
    from streamer.services.scheduler import Scheduler

    class _Rec:
        __slots__ = ("key", "value", "topic", "partition", "offset", "timestamp", "headers")

        def __init__(self, key: bytes, value: bytes, partition: int, offset: int) -> None:
            self.key, self.value, self.topic = key, value, "in"
            self.partition, self.offset, self.timestamp, self.headers = partition, offset, None, None

    tmpl = events(1, 1, seed=9, prefix="mem")[0]
    index = PendingIndex(WindowRules(max_events=10**9, max_age_s=10**9))
    buffer = _NullBuffer()
    sched = Scheduler(index, buffer, None, None, budget=None,  # type: ignore[arg-type]
                      prompt_tokens=8192)
    flow = UpdateFlow(index, buffer, sched, None, max_message_bytes=1 << 20,  # type: ignore[arg-type]
                      max_event_age_s=1e12, max_clock_skew_s=1e12)
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    rss0 = rss_kb(os.getpid()) or 0
    t0 = time.perf_counter()
    batch: list[_Rec] = []
    bar = tqdm(total=n_users, desc="1 pending event per user", unit="user", file=sys.stdout,
               mininterval=1)
    import json

    for u in range(n_users):
        doc = dict(tmpl, user_id=f"u{u:07d}", event_id=f"e{u:07d}")
        batch.append(_Rec(doc["user_id"].encode(), json.dumps(doc).encode(), u % 8, u // 8))
        if len(batch) == INTAKE_BATCH:
            await flow.intake(batch)
            batch = []
            bar.update(INTAKE_BATCH)
    if batch:
        await flow.intake(batch)
    bar.close()
    took = time.perf_counter() - t0
    batch = []
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    rss1 = rss_kb(os.getpid()) or 0
    assert len(index) == n_users
    return {"users": n_users, "pending_events": index.pending_events(),
            "python_bytes_held": held, "bytes_per_pending_user": held / n_users,
            "rss_delta_kb": rss1 - rss0, "intake_events_per_s_under_tracemalloc": n_users / took,
            "what": "in-process intake + pending index of one worker (the buffer writes "
                    "discarded): Python memory still allocated after the intake (tracemalloc), "
                    "per pending user; RSS delta of the process for reference"}


Bench = Callable[..., Any]
