"""Kafka adapters against a real broker: topic provisioning, change events, dead letters."""

import asyncio
from datetime import datetime

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas import DeadLetter, SummaryChanged, ce_attributes
from streamer.adapters.kafka.admin import ensure_topics
from streamer.adapters.kafka.publish import DeadLetterPublisher, KafkaChangePublisher
from streamer.adapters.kafka.topic_reader import read_topic
from streamer.errors import InvalidEventError
from streamer.services.updater import change_event
from streamer.settings import KafkaSettings
from tests.integration.test_cassandra_store import record


@pytest.fixture
def kafka_settings(kafka_bootstrap, unique):
    return KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        input_topic=f"it-{unique}.in",
        output_topic=f"it-{unique}.out",
        dead_letter_topic=f"it-{unique}.in.dlq",
        failures_topic=f"it-{unique}.failures",
        partitions=3,
    )


async def consume_all(bootstrap, topic, n, timeout=60):
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    out = []
    try:
        async with asyncio.timeout(timeout):
            while len(out) < n:
                batch = await consumer.getmany(timeout_ms=500)
                for msgs in batch.values():
                    out.extend(msgs)
    finally:
        await consumer.stop()
    return out


@pytest.fixture
async def producer(kafka_bootstrap):
    p = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await p.start()
    yield p
    await p.stop()


def sender(producer):
    async def send(topic, key, value, headers):
        await producer.send_and_wait(topic, value, key=key, headers=list(headers))

    return send


async def test_ensure_topics_creates_then_reports_mismatch(kafka_settings):
    assert await ensure_topics(kafka_settings) == []
    assert await ensure_topics(kafka_settings) == []  # idempotent
    wrong = kafka_settings.model_copy(update={"partitions": 5})
    problems = await ensure_topics(wrong)
    assert len(problems) == 4 and "has 3 partitions, expected 5" in problems[0]


async def test_change_events_are_keyed_by_user(kafka_settings, producer):
    await ensure_topics(kafka_settings)
    pub = KafkaChangePublisher(sender(producer), kafka_settings.output_topic)
    for v in (1, 2):
        await pub.publish(change_event(record("u-7", v)))
    msgs = await consume_all(kafka_settings.bootstrap_servers, kafka_settings.output_topic, 2)
    assert {m.key for m in msgs} == {b"u-7"} and len({m.partition for m in msgs}) == 1
    assert [m.value.count(b'"version":') for m in msgs] == [1, 1]
    for m in msgs:  # CloudEvents, binary mode: the attributes in ce_* headers
        event = SummaryChanged.model_validate_json(m.value)
        ce = ce_attributes(m.headers)
        assert ce == {"specversion": "1.0", "id": event.event_id,
                      "type": "io.prefstream.summary.updated.v1", "source": "/prefstream",
                      "subject": "u-7", "time": ce["time"], "datacontenttype": "application/json"}
        assert datetime.fromisoformat(ce["time"]) == event.occurred_at


async def test_dead_letter_keeps_original_bytes_and_headers(kafka_settings, producer):
    await ensure_topics(kafka_settings)
    dlq = DeadLetterPublisher(sender(producer), kafka_settings.dead_letter_topic,
                              consumer_group="g")
    await dlq.publish(InvalidEventError("invalid_json", "value is not JSON"), key=b"k",
                      value=b"\xff{oops", headers=[("trace", b"abc")], source_topic="in",
                      partition=2, offset=41)
    (msg,) = await consume_all(kafka_settings.bootstrap_servers, kafka_settings.dead_letter_topic, 1)
    assert msg.value == b"\xff{oops" and msg.key == b"k"
    assert ("trace", b"abc") in msg.headers
    envelope = DeadLetter.from_headers(msg.headers)
    assert (envelope.error_type, envelope.source_partition, envelope.source_offset) == (
        "invalid_json", 2, 41)
    assert envelope.consumer_group == "g"


async def test_read_topic_reads_every_partition_from_its_beginning_every_time(kafka_settings,
                                                                             producer):
    """A fault seen in CI: assigning partitions without a position let the consumer's own reset
    to "latest" race the seek to the beginning, so a whole read could come back empty."""
    await ensure_topics(kafka_settings)
    topic = kafka_settings.output_topic
    for i in range(30):
        await producer.send_and_wait(topic, b"v%d" % i, key=b"k%d" % i)
    for _ in range(10):
        seen = [value async for _key, value, _headers in
                read_topic(kafka_settings, topic)]
        assert sorted(seen) == sorted(b"v%d" % i for i in range(30))
