"""Two ways in besides our own schema, end to end on real servers.

Items named by id: the MIND fixture goes through
`streamer import mind --ids-only --to kafka` and a `streamer worker` with the catalog on; the
items reach the catalog topic only after the clicks (`streamer catalog load`), and still resolve
when the windows close.  An item the catalog never gets is applied without it after the grace
period, recorded in the version and counted on /metrics.

A mapping: Segment e-commerce track calls on the input topic, converted by the shipped mapping
in the worker; those it cannot convert are dead-lettered with the mapping's reason."""

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

from schemas import DeadLetter, Item, PairwiseChoice
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

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "fixtures" / "datasets" / "mind"
SEGMENT = ROOT / "deploy" / "mappings" / "segment-ecommerce.yaml"
SEGMENT_SAMPLE = ROOT / "deploy" / "mappings" / "samples" / "segment-ecommerce.jsonl"
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


async def test_segment_track_calls_through_the_shipped_mapping(
        kafka_bootstrap, cassandra_port, unique, tmp_path):
    standin, base = start_standin(tmp_path, "--ttft-ms", "10")
    stack = Stack(kafka_bootstrap, cassandra_port, unique, [base],
                  extra_env={"STREAMER_MAPPING__FILE": str(SEGMENT)})
    await stack.ensure_topics()
    worker = stack.start_worker(tmp_path)
    procs = [standin, worker]
    try:
        lines = [ln for ln in SEGMENT_SAMPLE.read_bytes().splitlines() if ln.strip()]
        records = [((json.loads(ln).get("userId") or "").encode() or None, ln) for ln in lines]
        await produce(kafka_bootstrap, stack.input_topic, records)
        want = {f"seg-msg-{i}" for i in range(1, 6)}
        async with TopicReader(kafka_bootstrap, stack.output_topic) as changes:
            got = await wait_for_events_applied(changes, want, timeout_s=90, procs=procs)
        assert {e for c in got for e in c.event_ids} == want
        assert {c.user_id for c in got} == {"user-42", "user-7"}
        async with TopicReader(kafka_bootstrap, stack.dlq_topic) as dlq:
            deadline = time.monotonic() + 30
            while len(dlq.messages) < 3 and time.monotonic() < deadline:
                await dlq.poll()
        letters = {m.value: DeadLetter.from_headers(m.headers) for m in dlq.messages}
        assert len(dlq.messages) == 3
        assert [letters[ln].error_type for ln in lines[5:]] == [
            "mapping_missing_field", "mapping_no_rule", "mapping_bad_value"]
        assert "rule 'product reviewed'" in letters[lines[7]].error_message
    finally:
        stop_and_drop(procs, stack)
