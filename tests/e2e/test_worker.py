"""The whole loop on real servers: `streamer worker` subprocess, real Kafka, real Cassandra,
stand-in model over HTTP."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict

import httpx
import pytest

from schemas import INTERACTION_ADAPTER, DeadLetter
from streamer.adapters.cassandra.store import CassandraProfileStore, connect
from streamer.devtools.synthetic import generate_events
from streamer.domain.output import parse_summary
from streamer.domain.prompt import SYSTEM_PROMPT
from streamer.services.updater import NO_MODEL
from streamer.settings import CassandraSettings
from tests.e2e.harness import ROOT, Stack, TopicReader, produce, start_standin, wait_for_events_applied

N_USERS = 24
EXCHANGE_FILE = ROOT / "run" / "e2e-last-exchange.json"  # inspected when reviewing a run
INVALID = [
    (b"user-000", b"{this is not json", "invalid_json"),
    (b"user-001", json.dumps({"type": "interaction.click", "event_id": "x"}).encode(),
     "missing_user_id"),
    (b"user-002", b"\xff\xfe\x00", "invalid_utf8"),
    (b"user-003", json.dumps({"type": "interaction.click", "user_id": "user-003",
                              "event_id": "bad-1", "occurred_at": "not a time",
                              "item": {"id": "i"}}).encode(), "validation_error"),
]


def users_events() -> dict[str, list]:
    """A realistic clickstream (news impressions, ratings, likes, pairwise, clicks) per user."""
    per_user: dict[str, list] = {}
    for record in generate_events(N_USERS, (5, 10), seed=11):
        event = INTERACTION_ADAPTER.validate_python(record)
        per_user.setdefault(event.user_id, []).append(event)
    return per_user


@pytest.fixture
def log_dir(tmp_path):
    return tmp_path


async def test_worker_end_to_end(kafka_bootstrap, cassandra_port, unique, log_dir):
    standin, base = start_standin(log_dir, "--ttft-ms", "20", "--per-token-ms", "0.2")
    stack = Stack(kafka_bootstrap, cassandra_port, unique, [base])
    await stack.ensure_topics()
    worker = stack.start_worker(log_dir)
    procs = [standin, worker]
    settings = CassandraSettings(port=cassandra_port, keyspace=stack.keyspace)
    try:
        per_user = users_events()
        assert len(per_user) >= 20
        # interleave users, keep each user's order
        interleaved = []
        for i in range(max(len(v) for v in per_user.values())):
            for uid, events in per_user.items():
                if i < len(events):
                    interleaved.append((uid.encode(), events[i].model_dump_json().encode()))
        records = interleaved[:40] + [(k, v) for k, v, _ in INVALID] + interleaved[40:]
        # a duplicate delivery (producer retry) of an already-sent event
        records.append(interleaved[0])
        await produce(kafka_bootstrap, stack.input_topic, records)
        expected = {e.event_id for events in per_user.values() for e in events}

        async with TopicReader(kafka_bootstrap, stack.output_topic) as out:
            changes = await wait_for_events_applied(out, expected, timeout_s=240, procs=procs)
            await asyncio.sleep(3)  # anything extra (a double apply) would show up now
            await out.poll()
            changes = out.changes()

        # change events: per user, versions 1..n in order, chained, each event exactly once
        # change events are at-least-once with a deterministic id per (user, version); the
        # duplicate delivery of an event of a user's latest version may republish it
        distinct = list({c.event_id: c for c in changes}.values())
        assert len(changes) - len(distinct) <= 1
        changes = distinct
        by_user = defaultdict(list)
        for c in changes:
            by_user[c.user_id].append(c)
        assert set(by_user) == set(per_user)
        all_ids = [eid for c in changes for eid in c.event_ids]
        dupes = [(e, n) for e, n in Counter(all_ids).items() if n > 1]
        assert sorted(all_ids) == sorted(expected), f"applied twice: {dupes}"
        for uid, cs in by_user.items():
            assert [c.version for c in cs] == list(range(1, len(cs) + 1)), uid
            assert [c.previous_version for c in cs] == [None, *range(1, len(cs))]
            assert [eid for c in cs for eid in c.event_ids] == [e.event_id for e in per_user[uid]]
            for c in cs:
                if c.model == NO_MODEL:  # only unpaired dislikes: carried forward, all dropped
                    assert set(c.dropped_event_ids) == set(c.event_ids)
                else:
                    assert c.model == "VanillaH1/AlignXplore-Plus" and c.usage.prompt_tokens > 0

        # the exact prompt the model server received, and the reply the worker parsed
        last = httpx.get(f"{base}/admin/last", timeout=5).json()
        system, user = (m["content"] for m in last["messages"])
        assert system == SYSTEM_PROMPT and "=====Triple 1=====" in user
        reply = last["response"]["choices"][0]["message"]["content"]
        assert parse_summary(reply) in {c.summary for c in changes}
        EXCHANGE_FILE.parent.mkdir(exist_ok=True)
        EXCHANGE_FILE.write_text(json.dumps(last, indent=2, ensure_ascii=False))

        # store: history equals the change events, current row is the last version
        store = await asyncio.to_thread(
            CassandraProfileStore.from_settings, settings, migrate_schema=False)
        try:
            for uid, cs in by_user.items():
                history = await store.history(uid)
                assert [(h.version, h.event_ids, h.summary) for h in history] == [
                    (c.version, c.event_ids, c.summary) for c in cs]
                current = await store.get_current(uid)
                assert current is not None and current.version == cs[-1].version
                assert current.summary == cs[-1].summary and current.summary.strip()
                assert "</think>" not in current.summary
        finally:
            await store.aclose()

        # dead letters: original bytes, specific reason, source coordinates
        async with TopicReader(kafka_bootstrap, stack.dlq_topic) as dlq:
            for _ in range(40):
                await dlq.poll()
                if len(dlq.messages) >= len(INVALID):
                    break
        got = {m.value: DeadLetter.from_headers(m.headers) for m in dlq.messages}
        assert len(dlq.messages) == len(INVALID)
        for _key, value, code in INVALID:
            assert got[value].error_type == code
            assert got[value].source_topic == stack.input_topic
    finally:
        for p in procs:
            p.stop()
        cluster, session = connect(settings)
        session.execute(f"DROP KEYSPACE IF EXISTS {stack.keyspace}")
        cluster.shutdown()


async def test_sigterm_finishes_in_flight_updates_within_the_timeout(
    kafka_bootstrap, cassandra_port, unique, tmp_path
):
    """SIGTERM while model calls are in flight: they finish, their versions and change events
    go out, and the worker exits cleanly well before STREAMER_SHUTDOWN_TIMEOUT_S."""
    import signal
    import time

    standin, base = start_standin(tmp_path, "--ttft-ms", "3000")
    stack = Stack(kafka_bootstrap, cassandra_port, unique, [base],
                  extra_env={"STREAMER_SHUTDOWN_TIMEOUT_S": "20"})
    await stack.ensure_topics()
    worker = stack.start_worker(tmp_path)
    settings = CassandraSettings(port=cassandra_port, keyspace=stack.keyspace)
    try:
        async with TopicReader(kafka_bootstrap, stack.output_topic) as out:
            for _ in range(120):  # wait until the worker has joined the group and recovered
                if "Worker ready" in worker.log_path.read_text(errors="replace"):
                    break
                await asyncio.sleep(0.25)
            # the startup self-check made its own (1-token) call: look only after this point
            mark = len(worker.log_path.read_text(errors="replace"))
            events = [INTERACTION_ADAPTER.validate_python(r) for r in generate_events(6, 4, seed=1)]
            await produce(kafka_bootstrap, stack.input_topic,
                          [(e.user_id.encode(), e.model_dump_json().encode()) for e in events])
            # windows close at 4 events; each call takes 3 s: stop while they are in flight
            deadline = time.monotonic() + 30
            while "HTTP Request: POST" not in worker.log_path.read_text(errors="replace")[mark:]:
                assert time.monotonic() < deadline, worker.log_tail()
                await asyncio.sleep(0.1)
            started = time.monotonic()
            worker.popen.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(worker.popen.wait, 40)
            took = time.monotonic() - started
            assert code == 0, worker.log_tail()
            assert took < 20, f"shutdown took {took:.1f}s"
            for _ in range(20):
                await out.poll()
            applied = {eid for c in out.changes() for eid in c.event_ids}
        assert applied == {e.event_id for e in events}, worker.log_tail()
        assert "in-flight updates finished" in worker.log_path.read_text(errors="replace")
    finally:
        worker.stop()
        standin.stop()
        cluster, session = connect(settings)
        session.execute(f"DROP KEYSPACE IF EXISTS {stack.keyspace}")
        cluster.shutdown()
