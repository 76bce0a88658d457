"""Benchmarks 1 (stream overhead) and 2 (store overhead)."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from tqdm import tqdm

from .common import (
    BOOTSTRAP,
    CASSANDRA_PORT,
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

# ------------------------------------------------------------------------------ 1. stream


async def produce_all(topic: str, records: list[tuple[bytes, bytes]], desc: str) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=20,
                                max_batch_size=256 * 1024)
    await producer.start()
    t0 = time.monotonic()
    try:
        futs = []
        for key, value in tqdm(records, desc=desc, unit="ev", mininterval=1, file=sys.stdout):
            futs.append(await producer.send(topic, value, key=key))
            if len(futs) >= 5000:
                await asyncio.gather(*futs)
                futs.clear()
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return time.monotonic() - t0


async def bare_consume(topic: str, n: int, decode: bool) -> dict:
    import json

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    count, t_first, t_last = 0, None, None
    t_start = time.monotonic()
    try:
        deadline = time.monotonic() + 300
        while count < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                if t_first is None and msgs:
                    t_first = time.monotonic()
                for m in msgs:
                    if decode:
                        json.loads(m.value)
                count += len(msgs)
        t_last = time.monotonic()
    finally:
        await consumer.stop()
    # from the first fetch request (right after start) to the last record: a whole-topic read
    return {"consumed": count, "seconds": round(t_last - t_start, 3),
            "first_fetch_s": round((t_first or t_last) - t_start, 3),
            "events_per_s": count / (t_last - t_start)}


async def inprocess_consume(records: list[tuple[bytes, bytes]]) -> dict:
    """The worker's own per-record code (UpdateFlow.handle: decode, validate, window) without
    faust or Kafka, on the same records: where the worker's time goes."""
    from .scale import TPS, _Event, _flow, _Message

    flow = _flow(max_events=10**9)
    msgs = [_Message(k, v, TPS[i % 4], i) for i, (k, v) in enumerate(records)]
    t0 = time.perf_counter()
    for m in msgs:
        await flow.handle(_Event(m))
    took = time.perf_counter() - t0
    return {"consumed": len(msgs), "seconds": round(took, 3), "events_per_s": len(msgs) / took}


def worker_consume(suffix: str, n: int, model_url: str) -> dict:
    port = free_port()
    env = worker_env(suffix, [model_url], port,
                     STREAMER_WINDOW__MAX_EVENTS="1000000", STREAMER_WINDOW__MAX_AGE_S="1000000000",
                     STREAMER_WINDOW__MAX_PENDING_EVENTS=str(n * 10))
    t_spawn = time.monotonic()
    proc = spawn(f"worker-{suffix}", [sys.executable, "-m", "streamer", "worker"], env)
    samples = []
    try:
        wait_http(f"http://127.0.0.1:{port}/livez", 120, proc)
        bar = tqdm(total=n, desc="worker consume", unit="ev", file=sys.stdout, mininterval=1)
        deadline = time.monotonic() + 600
        last = 0
        while time.monotonic() < deadline:
            try:
                s = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=2).json()
            except httpx.HTTPError:
                s = None
            now = time.monotonic()
            if s is not None:
                c = s["consumed"]
                if c > 0:
                    samples.append((now, c))
                bar.update(c - last)
                last = c
                if c >= n:
                    break
            if not proc.alive():
                raise RuntimeError(f"worker exited:\n{proc.log_tail()}")
            time.sleep(0.1)
        bar.close()
    finally:
        proc.stop()
    if len(samples) < 2:
        raise RuntimeError(f"worker consumed too little: {samples}\n{proc.log_tail()}")
    (t0, c0), (t1, c1) = samples[0], samples[-1]
    return {"consumed": c1, "seconds": round(t1 - t0, 3), "events_per_s": (c1 - c0) / (t1 - t0),
            "startup_s": round(t0 - t_spawn, 1), "stats_samples": len(samples)}


async def bench_stream(n_events: int, standin_url: str) -> dict:
    suffix = f"stream{int(time.time())}"
    n_users = max(10, n_events // 50)
    say(f"stream overhead: generating {n_events} events ({n_users} users)")
    evs = events(n_users, 50, seed=3, prefix=suffix)[:n_events]
    records = [encode(e) for e in evs]
    del evs
    await ensure_topics(suffix)
    inp, _ = topics(suffix)
    produce_s = await produce_all(inp, records, "produce")
    n = len(records)
    mean_bytes = sum(len(v) for _, v in records) / n
    say("stream overhead: bare aiokafka consumer (run 1)")
    bare1 = await bare_consume(inp, n, decode=False)
    say("stream overhead: bare aiokafka consumer + json.loads")
    bare_json = await bare_consume(inp, n, decode=True)
    say("stream overhead: `streamer worker` (window never closes: no model calls)")
    worker = await asyncio.to_thread(worker_consume, suffix, n, standin_url)
    say("stream overhead: in-process UpdateFlow.handle on the same records (no faust/Kafka)")
    inproc = await inprocess_consume(records)
    say("stream overhead: bare aiokafka consumer (run 2)")
    bare2 = await bare_consume(inp, n, decode=False)
    bare_rate = statistics.mean([bare1["events_per_s"], bare2["events_per_s"]])
    ratio = worker["events_per_s"] / bare_rate
    say(f"stream overhead: worker {worker['events_per_s']:.0f} ev/s, bare {bare_rate:.0f} ev/s "
        f"-> ratio {ratio:.3f} (target >= 0.5)")
    return {
        "events": n, "mean_record_bytes": round(mean_bytes), "partitions": 4,
        "produce_s": round(produce_s, 2),
        "bare": [bare1, bare2], "bare_json": bare_json, "worker": worker,
        "inprocess_flow_handle": inproc,
        "bare_events_per_s": bare_rate, "worker_events_per_s": worker["events_per_s"],
        "ratio": ratio, "ratio_vs_bare_json": worker["events_per_s"] / bare_json["events_per_s"],
        "target": 0.5, "meets_target": ratio >= 0.5,
    }


# ------------------------------------------------------------------------------ 2. store


def _record(user: str, version: int, n_events: int = 8):
    from schemas import SummaryRecord, TokenUsage

    return SummaryRecord(
        user_id=user, version=version, previous_version=version - 1 if version > 1 else None,
        summary=("The user prefers long-form science journalism and quiet dramas; dislikes "
                 "celebrity gossip and tax manuals. ") * 6,
        model="VanillaH1/AlignXplore-Plus", window_id=f"w-{user}-{version:06d}",
        event_ids=tuple(f"evt-{user}-{version:06d}-{i}" for i in range(n_events)),
        usage=TokenUsage(prompt_tokens=1800, completion_tokens=420), latency_ms=812.5,
        created_at=datetime.now(UTC),
    )


async def _execute(session, statement, params=()):
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    resp = session.execute_async(statement, params)
    resp.add_callbacks(
        lambda rows: loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(rows)),
        lambda exc: loop.call_soon_threadsafe(lambda: fut.done() or fut.set_exception(exc)),
    )
    return await fut


async def _run_users(users: int, versions: int, op, desc: str) -> dict:
    bar = tqdm(total=users * versions, desc=desc, unit="ver", file=sys.stdout, mininterval=1,
               leave=False)

    async def one_user(u: int) -> None:
        for v in range(1, versions + 1):
            await op(u, v)
            bar.update(1)

    t0 = time.monotonic()
    await asyncio.gather(*(one_user(u) for u in range(users)))
    took = time.monotonic() - t0
    bar.close()
    return {"versions": users * versions, "seconds": round(took, 3),
            "versions_per_s": users * versions / took}


async def bench_store(users: int, versions: int, rounds: int) -> dict:
    from cassandra import ConsistencyLevel

    from streamer.adapters.cassandra.store import CassandraProfileStore, _to_values, connect
    from streamer.settings import CassandraSettings

    ks = f"bench_store_{int(time.time())}"
    settings = CassandraSettings(hosts=["127.0.0.1"], port=CASSANDRA_PORT, keyspace=ks)
    say(f"store overhead: keyspace {ks}, {users} users in parallel x {versions} versions, "
        f"{rounds} round(s)")
    store = await asyncio.to_thread(CassandraProfileStore.from_settings, settings)
    cluster, session = await asyncio.to_thread(connect, settings)
    from streamer.adapters.cassandra.store import _COLUMNS, _PLACEHOLDERS

    plain = session.prepare(f"INSERT INTO {ks}.summary_history ({_COLUMNS}) VALUES ({_PLACEHOLDERS})")
    plain.consistency_level = ConsistencyLevel.LOCAL_QUORUM
    lwt = session.prepare(
        f"INSERT INTO {ks}.summary_history ({_COLUMNS}) VALUES ({_PLACEHOLDERS}) IF NOT EXISTS")
    lwt.consistency_level = ConsistencyLevel.LOCAL_QUORUM
    lwt.serial_consistency_level = ConsistencyLevel.LOCAL_SERIAL
    # prebuild records so that model construction is not timed in any variant
    results: dict[str, list[dict]] = {"append": [], "bare_insert": [], "bare_lwt_insert": []}
    try:
        # warm-up (connections, prepared statements, JIT of the C1 compiler)
        warm = [_record(f"warm-{u}", 1) for u in range(users)]
        await asyncio.gather(*(_execute(session, plain, _to_values(r)) for r in warm))
        for rnd in range(rounds):
            for name in ("bare_insert", "append", "bare_lwt_insert"):
                recs = {(u, v): _record(f"{name}-r{rnd}-u{u:03d}", v)
                        for u in range(users) for v in range(1, versions + 1)}
                if name == "append":
                    async def op(u, v, recs=recs):
                        await store.append(recs[(u, v)])
                elif name == "bare_insert":
                    vals = {k: _to_values(r) for k, r in recs.items()}

                    async def op(u, v, vals=vals):
                        await _execute(session, plain, vals[(u, v)])
                else:
                    vals = {k: _to_values(r) for k, r in recs.items()}

                    async def op(u, v, vals=vals):
                        rows = await _execute(session, lwt, vals[(u, v)])
                        assert rows[0].applied
                res = await _run_users(users, versions, op, f"{name} r{rnd + 1}")
                say(f"  round {rnd + 1} {name}: {res['versions_per_s']:.0f} versions/s")
                results[name].append(res)
    finally:
        await store.aclose()
        await asyncio.to_thread(cluster.shutdown)
    med = {k: statistics.median(r["versions_per_s"] for r in v) for k, v in results.items()}
    ratio = med["append"] / med["bare_insert"]
    ratio_lwt = med["append"] / med["bare_lwt_insert"]
    say(f"store overhead: append {med['append']:.0f}/s, bare INSERT {med['bare_insert']:.0f}/s, "
        f"bare LWT INSERT {med['bare_lwt_insert']:.0f}/s -> ratio {ratio:.3f} (target >= 0.8), "
        f"vs LWT {ratio_lwt:.3f}")
    return {
        "users_in_parallel": users, "versions_per_user": versions, "rounds": rounds,
        "event_ids_per_version": 8, "runs": results, "median_versions_per_s": med,
        "ratio": ratio, "ratio_vs_bare_lwt": ratio_lwt, "target": 0.8,
        "meets_target": ratio >= 0.8,
        "append_round_trips": ("SELECT latest (LOCAL_QUORUM) + INSERT IF NOT EXISTS (Paxos) + "
                               "UNLOGGED BATCH applied_events + UPDATE summaries_current IF "
                               "version < new (Paxos; on a user's first version it fails and "
                               "INSERT IF NOT EXISTS follows, a third Paxos)"),
    }
