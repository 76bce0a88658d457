"""Read a whole topic once: every partition from its beginning to the end offsets it had when
the read started (no consumer group, nothing committed). For ``streamer rebuild-current``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from ...errors import BrokerUnavailableError, ConfigurationError
from ...settings import KafkaSettings
from ..security import kafka_client_kwargs, kafka_unreachable


async def read_topic(kafka: KafkaSettings, topic: str, *,
                     on_record: Callable[[], Any] | None = None
                     ) -> AsyncIterator[tuple[bytes | None, bytes | None, Any]]:
    """(key, value, headers) of every record, partition by partition, in offset order."""
    consumer = await start_reader(kafka)
    try:
        ends = await assign_whole_topic(consumer, topic)
        if ends is None:
            raise ConfigurationError(f"topic {topic!r} does not exist")
        tps = sorted(ends)
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=500)
                for record in batch.get(tp, ()):
                    if record.offset >= ends[tp]:
                        break
                    if on_record is not None:
                        on_record()
                    yield record.key, record.value, record.headers
    finally:
        await consumer.stop()


async def start_reader(kafka: KafkaSettings) -> AIOKafkaConsumer:
    """A started consumer with no group (nothing committed), reading committed records."""
    # earliest: assigning a partition without a position makes the fetcher reset it, and a
    # reset to "latest" racing a lazy seek to the beginning can skip the whole partition
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers,
                                enable_auto_commit=False, isolation_level="read_committed",
                                auto_offset_reset="earliest", **kafka_client_kwargs(kafka))
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise BrokerUnavailableError(kafka_unreachable(kafka, exc)) from exc
    return consumer


async def assign_whole_topic(consumer: AIOKafkaConsumer,
                            topic: str) -> dict[TopicPartition, int] | None:
    """Assign every partition of ``topic``, each positioned at its beginning; returns each
    partition's end offset at this moment (None: no such topic)."""
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public call
        partitions = consumer._client.cluster.partitions_for_topic(topic)  # noqa: SLF001
    if not partitions:
        return None
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    starts = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)
    for tp in tps:
        consumer.seek(tp, starts[tp])  # explicit offsets: no lazy reset to race with
    return ends
