"""Shared stream helpers (produce, bare consumer) and benchmark (b), the version write."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from tqdm import tqdm

from .common import (
    BOOTSTRAP,
    CASSANDRA_PORT,
    say,
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
    from streamer.adapters.cassandra.store import _INSERT_VERSION

    # the baselines write the same version row into the same table, without the index rows
    insert = _INSERT_VERSION.format(keyspace=ks)
    plain = session.prepare(insert)
    plain.consistency_level = ConsistencyLevel.LOCAL_QUORUM
    lwt = session.prepare(f"{insert} IF NOT EXISTS")
    lwt.consistency_level = ConsistencyLevel.LOCAL_QUORUM
    lwt.serial_consistency_level = ConsistencyLevel.LOCAL_SERIAL
    # prebuild records so that model construction is not timed in any variant
    results: dict[str, list[dict]] = {"append": [], "bare_insert": [], "bare_lwt_insert": []}
    try:
        # warm-up (connections, prepared statements, JIT of the C1 compiler)
        warm = [_record(f"warm-{u}", 1) for u in range(users)]
        await asyncio.gather(*(_execute(session, plain, _to_values(r)) for r in warm))
        for rnd in range(rounds):
            # ABC then CBA: the node slows down as the run goes on (flushes, compactions), so
            # each variant gets the early and the late slot equally often
            order = ("bare_insert", "append", "bare_lwt_insert")
            for name in order if rnd % 2 == 0 else order[::-1]:
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
    # the headline is the median of the per-round ratios: append and the bare LWT run next to
    # each other in every round, so a slow round slows both (the ratio of the medians is kept)
    paired = [a["versions_per_s"] / b["versions_per_s"]
              for a, b in zip(results["append"], results["bare_lwt_insert"], strict=True)]
    ratio_lwt = statistics.median(paired)
    say(f"store overhead: append {med['append']:.0f}/s, bare INSERT {med['bare_insert']:.0f}/s, "
        f"bare LWT INSERT {med['bare_lwt_insert']:.0f}/s -> vs LWT {ratio_lwt:.3f} per round "
        f"(median of {len(paired)}, range {min(paired):.3f}-{max(paired):.3f}; target >= 0.8), "
        f"vs plain INSERT {ratio:.3f}")
    return {
        "users_in_parallel": users, "versions_per_user": versions, "rounds": rounds,
        "event_ids_per_version": 8, "runs": results, "median_versions_per_s": med,
        "ratio": ratio, "ratio_vs_bare_lwt": ratio_lwt, "target": 0.8,
        "ratio_vs_bare_lwt_per_round": [round(r, 3) for r in paired],
        "ratio_of_medians_vs_bare_lwt": med["append"] / med["bare_lwt_insert"],
        "meets_target": ratio_lwt >= 0.8,
        "append_round_trips": ("one conditional BATCH on the user's profile_log partition: "
                               "INSERT <version row> IF NOT EXISTS plus the 8 index rows "
                               "(one Paxos round, nothing after it); the expected version "
                               "comes from the caller, no read"),
    }
