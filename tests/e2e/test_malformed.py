"""Malformed input on the real broker: each bad record gets a specific dead-letter reason, and
every valid event around it is applied, including a user flooding thousands of events."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

from schemas import INTERACTION_ADAPTER, DeadLetter
from streamer.adapters.cassandra.store import connect
from streamer.devtools.synthetic import generate_events
from tests.e2e.harness import Stack, TopicReader, produce, start_standin, wait_for_events_applied
from tests.e2e.ledger import check_ledger, read_history

FLOOD_EVENTS = 2000


def bad_records(now: datetime) -> list[tuple[bytes | None, bytes, str]]:
    base = {"type": "interaction.click", "schema_version": 1, "event_id": "bad", "user_id": "u-bad",
            "occurred_at": now.isoformat(), "domain": "news",
            "item": {"id": "n1", "title": "T", "abstract": "A"}}

    def rec(**changes):
        doc = {**base, **changes}
        return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()

    return [
        (b"u-bad", b"not json at all", "invalid_json"),
        (b"u-bad", b"\xc3\x28{\"a\": 1}", "invalid_utf8"),
        (b"u-bad", b"[1, 2, 3]", "not_an_object"),
        (b"u-bad", rec(item={"id": 5, "title": ["x"]}), "validation_error"),
        (b"u-bad", rec(type="interaction.teleport"), "unknown_type"),
        (b"u-bad", rec(schema_version=3), "unsupported_schema_version"),
        (None, rec(user_id=...), "missing_user_id"),
        (None, rec(user_id=""), "missing_user_id"),
        (b"u-bad", rec(item={"id": "n1", "title": "x" * 150_000}), "oversized"),
        (b"u-bad", rec(occurred_at="1999-01-01T00:00:00Z"), "timestamp_too_old"),
        (b"u-bad", rec(occurred_at=(now + timedelta(days=30)).isoformat()), "timestamp_in_future"),
        (b"u-bad", rec(occurred_at="2026-01-01T00:00:00"), "validation_error"),  # naive
        (b"someone-else", rec(), "key_mismatch"),
    ]


def flood(now: datetime) -> list:
    events = []
    for i in range(FLOOD_EVENTS):
        events.append(INTERACTION_ADAPTER.validate_python({
            "type": "interaction.click", "event_id": f"flood-{i:05d}", "user_id": "u-flood",
            "occurred_at": (now - timedelta(seconds=FLOOD_EVENTS - i)).isoformat(),
            "domain": "movies", "item": {"id": f"m{i % 40}", "title": f"Movie {i % 40}",
                                         "genres": ["Drama"] if i % 2 else ["Comedy"]}}))
    return events


async def test_malformed_records_are_dead_lettered_and_valid_ones_all_applied(
    kafka_bootstrap, cassandra_port, unique, tmp_path
):
    now = datetime.now(UTC)
    standin, base = start_standin(tmp_path)
    stack = Stack(kafka_bootstrap, cassandra_port, unique, [base], extra_env={
        "STREAMER_KAFKA__MAX_MESSAGE_BYTES": "100000",
        "STREAMER_WINDOW__MAX_EVENTS": "50",
        "STREAMER_WINDOW__MAX_EVENT_AGE_S": str(400 * 86400),
    })
    await stack.ensure_topics()
    worker = stack.start_worker(tmp_path)
    try:
        recent = generate_events(8, 6, seed=5, start=now - timedelta(days=2), span_days=1)
        valid = [INTERACTION_ADAPTER.validate_python(r) for r in recent]
        valid += flood(now)
        bad = bad_records(now)
        records = [(e.user_id.encode(), e.model_dump_json().encode()) for e in valid]
        step = len(records) // (len(bad) + 1)
        for i, (key, value, _code) in enumerate(bad):  # spread the bad ones through the stream
            records.insert((i + 1) * step + i, (key, value))
        await produce(kafka_bootstrap, stack.input_topic, records)

        async with TopicReader(kafka_bootstrap, stack.output_topic) as out:
            await wait_for_events_applied(out, {e.event_id for e in valid}, timeout_s=300,
                                          procs=[standin, worker])
            changes = out.changes()
        produced: dict[str, list[str]] = {}
        for e in valid:
            produced.setdefault(e.user_id, []).append(e.event_id)
        histories = await asyncio.to_thread(read_history, cassandra_port, stack.keyspace)
        report = check_ledger(produced, changes, histories)
        assert report.events_checked == len(valid)
        # the flooding user's window grows while its update is in flight, and is applied as a
        # chain of versions of at most STREAMER_WINDOW__MAX_EVENTS_PER_UPDATE (64) events each
        flood_versions = histories["u-flood"]
        assert max(len(r.event_ids) for r in flood_versions) <= 64
        assert len(flood_versions) >= FLOOD_EVENTS // 64

        async with TopicReader(kafka_bootstrap, stack.dlq_topic) as dlq:
            for _ in range(60):
                await dlq.poll()
                if len(dlq.messages) >= len(bad):
                    break
            await asyncio.sleep(1)
            await dlq.poll()
        envelopes = [(m.value, DeadLetter.from_headers(m.headers)) for m in dlq.messages]
        assert len(envelopes) == len(bad)
        got = Counter(env.error_type for _, env in envelopes)
        assert got == Counter(code for _, _, code in bad)
        by_value = {value: env for value, env in envelopes}
        for _key, value, code in bad:
            env = by_value[value]  # the original bytes, untouched
            assert env.error_type == code and env.error_message
            assert env.source_topic == stack.input_topic and env.source_offset >= 0
    finally:
        worker.stop()
        standin.stop()
        cluster, session = connect_settings(cassandra_port, stack.keyspace)
        session.execute(f"DROP KEYSPACE IF EXISTS {stack.keyspace}")
        cluster.shutdown()


def connect_settings(port: int, keyspace: str):
    from streamer.settings import CassandraSettings

    return connect(CassandraSettings(port=port, keyspace=keyspace))
