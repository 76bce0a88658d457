"""Items named by id, end to end on real servers: the MIND fixture goes through
`streamer import mind --ids-only --to kafka` and a `streamer worker` with the catalog on; the
items reach the catalog topic only after the clicks (`streamer catalog load`), and still resolve
when the windows close.  An item the catalog never gets is applied without it after the grace
period, recorded in the version and counted on /metrics."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from schemas import Item, PairwiseChoice
from streamer.adapters.cassandra.store import CassandraProfileStore
from streamer.adapters.kafka.admin import ensure_topics
from streamer.settings import CassandraSettings
from tests.e2e.harness import (
    Stack,
    TopicReader,
    free_port,
    produce,
    start_standin,
    stop_and_drop,
    wait_for_events_applied,
)
from tests.unit.test_telemetry import sample_value

pytestmark = pytest.mark.e2e

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "datasets" / "mind"
GRACE_S = 15.0
MIND_EVENTS = {"mind-U100-h0", "mind-U100-h1", "mind-imp-1", "mind-imp-2", "mind-imp-3"}


def streamer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "streamer", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"streamer {' '.join(args)}:\n{proc.stderr}"
    return proc


async def test_mind_by_id_resolves_items_published_after_the_clicks(
        kafka_bootstrap, cassandra_port, unique, tmp_path):
    standin, base = start_standin(tmp_path, "--ttft-ms", "10")
    catalog_topic = f"e2e-{unique}.items.v1"
    stack = Stack(kafka_bootstrap, cassandra_port, unique, [base], extra_env={
        "STREAMER_CATALOG__ENABLED": "true", "STREAMER_CATALOG__TOPIC": catalog_topic,
        "STREAMER_CATALOG__GRACE_S": str(GRACE_S)})
    await stack.ensure_topics()
    assert await ensure_topics(stack.kafka_settings(), catalog_topic=catalog_topic) == []
    port = free_port()
    worker = stack.start_worker(tmp_path, port=port)
    procs = [standin, worker]
    env = stack.env(port)
    try:
        # the clicks first: events by id, their items kept aside in a catalog file
        catalog_file = tmp_path / "news.catalog.jsonl"
        started = time.monotonic()
        out = await asyncio.to_thread(
            streamer, env, "import", "mind", str(DATA / "behaviors.tsv"),
            str(DATA / "news.tsv"), "--ids-only", "--catalog-out", str(catalog_file),
            "--to", "kafka", "--no-progress")
        assert "produced 5 events" in out.stderr
        async with TopicReader(kafka_bootstrap, stack.output_topic) as changes:
            # the windows are due (2 s) but their items are unknown: nothing is applied
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                await changes.poll()
            assert changes.messages == [], "applied before its items were in the catalog"
            stats = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()
            assert stats["buffered"] == 5 and stats["pending_events"] == 5
            # the items arrive late, within the grace period
            await asyncio.to_thread(streamer, env, "catalog", "load", str(catalog_file),
                                    "--no-progress")
            got = await wait_for_events_applied(changes, MIND_EVENTS, timeout_s=60, procs=procs)
            resolved_after = time.monotonic() - started
            assert resolved_after < GRACE_S + 5  # not merely the end of the grace period
            for c in got:
                assert c.window.unresolved_item_ids == () and c.dropped_event_ids == ()
            last = httpx.get(f"{base}/admin/last", timeout=5).json()
            prompt = last["messages"][1]["content"]
            news = {line.split("\t")[0]: line.split("\t")[3]
                    for line in (DATA / "news.tsv").read_text().splitlines()}
            assert any(f"Title: {title}" in prompt for title in news.values()), prompt

            # an item the catalog never gets: applied without it after the grace period
            never = PairwiseChoice(event_id="u9-1", user_id="U900", domain="news",
                                   occurred_at="2019-11-15T10:00:00Z",
                                   chosen=Item(id="N-never"), rejected=Item(id="N1001"))
            sent = time.monotonic()
            await produce(kafka_bootstrap, stack.input_topic,
                          [(b"U900", never.model_dump_json().encode())])
            got = await wait_for_events_applied(changes, MIND_EVENTS | {"u9-1"},
                                                timeout_s=GRACE_S + 60, procs=procs)
            waited = time.monotonic() - sent
        v = next(c for c in got if c.user_id == "U900")
        assert v.window.unresolved_item_ids == ("N-never",)
        assert v.dropped_event_ids == ("u9-1",) and v.version == 1
        assert waited >= GRACE_S - 1  # it waited out the grace period
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert sample_value(metrics, "streamer_catalog_unresolved_items_total") == 1
        assert sample_value(metrics, "streamer_catalog_items") == 5
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
        assert ready["catalog"]["caught_up"] and ready["catalog"]["items"] == 5

        store = await asyncio.to_thread(CassandraProfileStore.from_settings, CassandraSettings(
            port=cassandra_port, keyspace=stack.keyspace), migrate_schema=False)
        try:
            stored = {u: await store.history(u) for u in ("U100", "U200", "U900")}
        finally:
            await store.aclose()
        assert {e for vs in stored.values() for r in vs for e in r.event_ids} \
            == MIND_EVENTS | {"u9-1"}
        assert stored["U900"][0].window.unresolved_item_ids == ("N-never",)
        print(json.dumps({"mind_events": 5, "users": 2, "resolved_after_s": round(resolved_after, 1),
                          "unresolved_waited_s": round(waited, 1),
                          "versions": sum(len(v) for v in stored.values())}))
    finally:
        stop_and_drop(procs, stack)
