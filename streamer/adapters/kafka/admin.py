"""Topic provisioning: create the service's topics or report how existing ones differ."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from ...errors import BrokerUnavailableError
from ...settings import KafkaSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    config: dict[str, str]


def topic_specs(settings: KafkaSettings) -> list[TopicSpec]:
    """Input and dead-letter topics are deleted by time; summaries are compacted by user id."""
    n, rf = settings.partitions, settings.replication_factor
    return [
        TopicSpec(settings.input_topic, n, rf, {"cleanup.policy": "delete"}),
        TopicSpec(settings.output_topic, n, rf, {"cleanup.policy": "compact"}),
        TopicSpec(settings.dead_letter_topic, n, rf, {"cleanup.policy": "delete"}),
        TopicSpec(settings.failures_topic, n, rf, {"cleanup.policy": "delete"}),
    ]


async def ensure_topics(settings: KafkaSettings, *, timeout_ms: int = 30_000) -> list[str]:
    """Create missing topics; return a list of problems with existing ones (empty when fine)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=timeout_ms
    )
    try:
        await admin.start()
    except KafkaError as exc:
        raise BrokerUnavailableError(
            f"cannot reach Kafka at {settings.bootstrap_servers} ({exc}); is it running? "
            "Locally: `make up`"
        ) from exc
    try:
        specs = topic_specs(settings)
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(s.name, s.partitions, s.replication, topic_configs=s.config)
                        for s in missing
                    ]
                )
            except TopicAlreadyExistsError:
                pass
            for s in missing:
                log.info("created topic %s (%d partitions)", s.name, s.partitions)
        problems = []
        present = [s for s in specs if s.name in existing]
        if present:
            described = await admin.describe_topics([s.name for s in present])
            counts = {d["topic"]: len(d["partitions"]) for d in described}
            for s in present:
                if counts.get(s.name) != s.partitions:
                    problems.append(
                        f"topic {s.name} has {counts.get(s.name)} partitions, expected "
                        f"{s.partitions} (STREAMER_KAFKA__PARTITIONS)"
                    )
        return problems
    finally:
        await admin.close()
