"""Benchmark c: the item catalog and the public-dataset importers.

* **view load**: catalog records produced to a topic of the private Kafka, then read into the
  worker's view (:class:`CatalogFollower`, decode + validate + store) vs a bare aiokafka
  consumer reading the same records with ``json.loads`` only;
* **lookups**: ``Catalog.get`` vs a bare dict lookup, and vs a Cassandra point read of the same
  item from an ``items`` table (prepared statement, the alternative design);
* **memory**: bytes per item of the view (tracemalloc), for news items of MIND's size;
* **enrichment per window**: a 16-event window of items named by id, resolved and turned into
  triples, vs the same window with its items inline (triples only);
* **importers**: events/s of ``streamer.domain.importers`` on synthetic files in the published
  formats, vs reading and splitting the same files (the floor of any converter).

Nothing is asserted; every figure is measured in this run, ratios side by side.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer

from schemas import CatalogItem, Impression, Item, PairwiseChoice

from .common import BOOTSTRAP, CASSANDRA_PORT, say
from .stream_store import produce_all

WORDS = ("market election storm recipe league vaccine budget film album startup climate court "
         "travel science football health music space art royal").split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def news_items(n: int, seed: int = 3) -> list[CatalogItem]:
    """MIND-sized news items: a ~60-character title and a ~200-character abstract."""
    rng = random.Random(seed)
    return [CatalogItem(domain="news", item=Item(id=f"N{i}", title=_text(rng, 8),
                                                 abstract=_text(rng, 28))) for i in range(n)]


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else float("inf")


def _best_of(fn, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


async def bench_view_load(n: int) -> dict:
    from streamer.adapters.kafka.admin import ensure_topics
    from streamer.adapters.kafka.catalog import CatalogFollower
    from streamer.settings import KafkaSettings

    topic = f"bench-{uuid.uuid4().hex[:8]}.items.v1"
    await ensure_topics(KafkaSettings(bootstrap_servers=BOOTSTRAP, input_topic=topic + ".in",
                                      output_topic=topic + ".out", partitions=4),
                        catalog_topic=topic)
    records = [(r.item.id.encode(), r.model_dump_json().encode()) for r in news_items(n)]
    await produce_all(topic, records, "catalog records")

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    t0, count = time.monotonic(), 0
    try:
        while count < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            for msgs in batch.values():
                for m in msgs:
                    json.loads(m.value)
                count += len(msgs)
    finally:
        await consumer.stop()
    bare_s = time.monotonic() - t0

    follower = CatalogFollower(KafkaSettings(bootstrap_servers=BOOTSTRAP), topic)
    t0 = time.monotonic()
    task = asyncio.create_task(follower.run())
    await follower.wait_caught_up(300)
    ours_s = time.monotonic() - t0
    await follower.stop()
    await task
    assert len(follower.catalog) == n, (len(follower.catalog), n)
    return {"records": n, "bare_consumer_records_per_s": _rate(n, bare_s),
            "view_records_per_s": _rate(n, ours_s), "ratio_view_vs_bare": round(bare_s / ours_s, 3)}


def bench_lookups(n_items: int, n_lookups: int) -> dict:
    from streamer.domain.catalog import Catalog

    items = news_items(n_items)
    catalog = Catalog()
    plain: dict[str, Item] = {}
    for r in items:
        catalog.put(r)
        plain[r.item.id] = r.item
    rng = random.Random(5)
    keys = [f"N{rng.randrange(n_items)}" for _ in range(n_lookups)]
    ours = _best_of(lambda: [catalog.get(k) for k in keys])
    bare = _best_of(lambda: [plain.get(k) for k in keys])
    return {"items": n_items, "lookups": n_lookups, "view_lookups_per_s": _rate(n_lookups, ours),
            "dict_lookups_per_s": _rate(n_lookups, bare),
            "ratio_view_vs_dict": round(bare / ours, 3)}


def bench_cassandra_reads(n_items: int, n_reads: int) -> dict:
    from cassandra.cluster import Cluster

    cluster = Cluster(["127.0.0.1"], port=CASSANDRA_PORT)
    session = cluster.connect()
    ks = f"bench_items_{uuid.uuid4().hex[:8]}"
    try:
        session.execute(f"CREATE KEYSPACE {ks} WITH replication = "
                        "{'class': 'SimpleStrategy', 'replication_factor': 1}")
        session.execute(f"CREATE TABLE {ks}.items (item_id text PRIMARY KEY, record text)")
        insert = session.prepare(f"INSERT INTO {ks}.items (item_id, record) VALUES (?, ?)")
        for r in news_items(n_items):
            session.execute(insert, (r.item.id, r.model_dump_json()))
        select = session.prepare(f"SELECT record FROM {ks}.items WHERE item_id = ?")
        rng = random.Random(5)
        keys = [f"N{rng.randrange(n_items)}" for _ in range(n_reads)]
        t0 = time.perf_counter()
        for k in keys:  # one window's lookups are sequential on the scheduler's path
            CatalogItem.model_validate_json(session.execute(select, (k,)).one().record)
        sequential = time.perf_counter() - t0
        t0 = time.perf_counter()
        futures = [session.execute_async(select, (k,)) for k in keys]
        for f in futures:
            CatalogItem.model_validate_json(f.result().one().record)
        concurrent = time.perf_counter() - t0
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {ks}")
        cluster.shutdown()
    return {"items": n_items, "reads": n_reads,
            "sequential_reads_per_s": _rate(n_reads, sequential),
            "concurrent_reads_per_s": _rate(n_reads, concurrent),
            "mean_read_ms": round(sequential / n_reads * 1000, 3)}


def bench_memory(n: int) -> dict:
    from streamer.domain.catalog import Catalog

    wire = [(r.item.id.encode(), r.model_dump_json().encode()) for r in news_items(n)]

    def load() -> Catalog:
        catalog = Catalog()
        for key, value in wire:
            catalog.apply(key, value)
        return catalog

    apply_s = _best_of(load, rounds=2)  # JSON decode + validation + store, per record
    loads_s = _best_of(lambda: [json.loads(v) for _, v in wire], rounds=2)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    catalog = load()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(catalog) == n
    return {"items": n, "bytes_per_item": round(held / n),
            "record_bytes": round(sum(len(v) for _, v in wire) / n),
            "apply_records_per_s": _rate(n, apply_s), "json_loads_per_s": _rate(n, loads_s),
            "ratio_apply_vs_json_loads": round(loads_s / apply_s, 3)}


def bench_enrichment(windows: int, per_window: int = 16) -> dict:
    from streamer.domain.catalog import Catalog, bare_items, resolve
    from streamer.domain.triples import to_triples

    items = news_items(2000)
    catalog = Catalog()
    for r in items:
        catalog.put(r)
    rng = random.Random(9)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    inline_windows = []
    for w in range(windows):
        events = []
        for k in range(per_window):
            if k % 2:
                events.append(PairwiseChoice(
                    event_id=f"w{w}-{k}", user_id=f"u{w}", occurred_at=t0 + timedelta(seconds=k),
                    domain="news", chosen=rng.choice(items).item, rejected=rng.choice(items).item))
            else:
                events.append(Impression(
                    event_id=f"w{w}-{k}", user_id=f"u{w}", occurred_at=t0 + timedelta(seconds=k),
                    domain="news", clicked=(rng.choice(items).item,),
                    skipped=tuple(rng.choice(items).item for _ in range(4))))
        inline_windows.append(events)
    bare_windows = [[bare_items(e) for e in ws] for ws in inline_windows]
    inline_s = _best_of(lambda: [to_triples(ws) for ws in inline_windows])
    by_id_s = _best_of(lambda: [to_triples(resolve(ws, catalog.get).events)
                                for ws in bare_windows])
    lookups = sum(1 + (len(e.skipped) if isinstance(e, Impression) else 0)
                  for ws in bare_windows for e in ws)
    return {"windows": windows, "events_per_window": per_window,
            "lookups_per_window": round(lookups / windows, 1),
            "inline_us_per_window": round(inline_s / windows * 1e6, 1),
            "by_id_us_per_window": round(by_id_s / windows * 1e6, 1),
            "enrichment_us_per_window": round((by_id_s - inline_s) / windows * 1e6, 1),
            "ratio_inline_vs_by_id": round(inline_s / by_id_s, 3)}


def synthetic_datasets(n_users: int, rng: random.Random) -> dict[str, tuple[list[str], list[str]]]:
    """The three datasets' files, in their published formats, as lines."""
    n_news, n_movies = 2000, 2000
    news = [f"N{i}\tnews\tsports\t{_text(rng, 8)}\t{_text(rng, 28)}\thttps://x/{i}\t[]\t[]\n"
            for i in range(n_news)]
    behaviors, t = [], datetime(2019, 11, 11, 9, 0, 0, tzinfo=UTC)
    for i in range(n_users * 3):
        u = f"U{i % n_users}"
        when = (t + timedelta(minutes=i)).strftime("%m/%d/%Y %I:%M:%S %p")
        history = " ".join(f"N{rng.randrange(n_news)}" for _ in range(10))
        shown = " ".join(f"N{rng.randrange(n_news)}-{int(k == 0)}" for k in range(10))
        behaviors.append(f"{i + 1}\t{u}\t{when}\t{history}\t{shown}\n")
    movies = ["movieId,title,genres\n"] + [f"{i},{_text(rng, 3)} (1999),Drama|Comedy\n"
                                           for i in range(n_movies)]
    ratings = ["userId,movieId,rating,timestamp\n"] + [
        f"{i % n_users},{rng.randrange(n_movies)},4.0,{1_500_000_000 + i}\n"
        for i in range(n_users * 20)]
    meta = [json.dumps({"parent_asin": f"B{i}", "title": _text(rng, 6),
                        "description": [_text(rng, 30)]}) + "\n" for i in range(n_movies)]
    reviews = [json.dumps({"user_id": f"A{i % n_users}", "parent_asin": f"B{rng.randrange(n_movies)}",
                           "timestamp": 1_600_000_000_000 + i, "rating": 5.0}) + "\n"
               for i in range(n_users * 20)]
    return {"mind": (behaviors, news), "movielens": (ratings, movies), "amazon": (reviews, meta)}


def bench_importers(n_users: int) -> dict:
    from streamer.domain import importers

    data = synthetic_datasets(n_users, random.Random(4))
    out = {}
    for name, (events_lines, item_lines) in data.items():
        convert = getattr(importers, name)
        t0 = time.perf_counter()
        result = convert(events_lines, item_lines)
        took = time.perf_counter() - t0
        floor = _best_of(lambda el=events_lines, il=item_lines: (
            [ln.split("\t") for ln in el], [ln.split("\t") for ln in il]), rounds=2)
        out[name] = {"input_records": len(events_lines), "events": len(result.events),
                     "events_per_s": _rate(len(result.events), took),
                     "split_lines_per_s": _rate(len(events_lines) + len(item_lines), floor)}
    return out


async def bench_catalog(view_items: int, lookups: int, cassandra_reads: int, memory_items: int,
                        windows: int, importer_users: int) -> dict:
    say(f"catalog view load: {view_items} records through Kafka")
    view = await bench_view_load(view_items)
    say("catalog lookups (memory) and Cassandra point reads")
    lookup = bench_lookups(view_items, lookups)
    cassandra = await asyncio.to_thread(bench_cassandra_reads, min(view_items, 5000),
                                        cassandra_reads)
    say(f"catalog memory for {memory_items} items")
    memory = bench_memory(memory_items)
    say(f"enrichment cost over {windows} windows")
    enrichment = bench_enrichment(windows)
    say(f"importers on synthetic files ({importer_users} users)")
    imports = bench_importers(importer_users)
    return {"view_load": view, "lookups": lookup, "cassandra_point_reads": cassandra,
            "memory": memory, "enrichment": enrichment, "importers": imports,
            "ratio_memory_lookup_vs_cassandra_read": round(
                lookup["view_lookups_per_s"] / cassandra["sequential_reads_per_s"], 1)}
