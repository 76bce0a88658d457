"""Dead letters the broker would refuse as they are: a 3 MB record is cut to fit the topic."""

import json

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import MessageSizeTooLargeError

from schemas import DeadLetter
from streamer.adapters.kafka.admin import ensure_topics
from streamer.adapters.kafka.publish import DeadLetterPublisher
from streamer.domain.codec import decode_interaction
from streamer.errors import InvalidEventError
from tests.integration.test_kafka_adapters import consume_all, kafka_settings, producer, sender  # noqa: F401 (fixtures)

BROKER_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588  # Kafka's message.max.bytes default


async def topic_max_message_bytes(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": None})]
        )
    finally:
        await admin.close()
    ((_err, _msg, _type, _name, entries),) = response.resources
    return int(dict((e[0], e[1]) for e in entries)["max.message.bytes"])


def three_mb_invalid_record() -> tuple[bytes, InvalidEventError]:
    value = json.dumps({"user_id": "u-big", "junk": "\u00e9" * 1_500_000}).encode()
    assert len(value) > 3_000_000
    with pytest.raises(InvalidEventError) as info:
        decode_interaction(b"u-big", value, max_bytes=1_048_576, require_key=True)
    assert info.value.code == "oversized"
    return value, info.value


async def test_a_3mb_dead_letter_is_truncated_to_fit_the_broker(kafka_settings, producer):  # noqa: F811
    await ensure_topics(kafka_settings)
    topic = kafka_settings.dead_letter_topic
    limit = await topic_max_message_bytes(kafka_settings.bootstrap_servers, topic)
    assert limit == BROKER_DEFAULT_MAX_MESSAGE_BYTES  # the broker's default 1 MB, not raised
    value, error = three_mb_invalid_record()

    # control: as it is, the broker refuses the record (the producer's own limit is lifted)
    big = AIOKafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers, acks="all",
                           max_request_size=8 * 1_048_576)
    await big.start()
    try:
        with pytest.raises(MessageSizeTooLargeError):
            await big.send_and_wait(topic, value, key=b"u-big")
    finally:
        await big.stop()

    dlq = DeadLetterPublisher(sender(producer), topic, consumer_group="g")
    envelope = await dlq.publish(error, key=b"u-big", value=value,
                                 headers=[("traceparent", b"00-abc-def-01")],
                                 source_topic=kafka_settings.input_topic, partition=1, offset=99)
    assert envelope.truncated and envelope.original_size == len(value)

    (msg,) = await consume_all(kafka_settings.bootstrap_servers, topic, 1)
    headers = dict(msg.headers)
    record_bytes = (len(msg.key) + len(msg.value)
                    + sum(len(k.encode()) + len(v) for k, v in msg.headers))
    assert record_bytes < BROKER_DEFAULT_MAX_MESSAGE_BYTES - 16 * 1024
    assert len(msg.value) > 500_000 and value.startswith(msg.value)
    assert msg.key == b"u-big"
    assert headers["x-dlq-original-size"] == str(len(value)).encode()
    assert headers["x-dlq-truncated"] == b"true"
    assert headers["x-dlq-error-type"] == b"oversized"
    assert headers["x-dlq-source-topic"] == kafka_settings.input_topic.encode()
    assert (headers["x-dlq-source-partition"], headers["x-dlq-source-offset"]) == (b"1", b"99")
    assert headers["x-dlq-consumer-group"] == b"g"
    assert b"bytes > limit" in headers["x-dlq-error-message"]
    assert headers["traceparent"] == b"00-abc-def-01"
    assert DeadLetter.from_headers(msg.headers) == envelope
