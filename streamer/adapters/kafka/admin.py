"""Topic provisioning: create the service's topics or report how existing ones differ."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from ...errors import BrokerUnavailableError, ConfigurationError
from ...settings import KafkaSettings
from ..security import kafka_client_kwargs, kafka_unreachable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    config: dict[str, str]


def topic_specs(settings: KafkaSettings, catalog_topic: str | None = None) -> list[TopicSpec]:
    """Input and dead-letter topics are deleted by time; summaries are compacted by user id,
    and the item catalog (when used) by item id."""
    n, rf = settings.partitions, settings.replication_factor
    specs = [
        TopicSpec(settings.input_topic, n, rf, {"cleanup.policy": "delete"}),
        TopicSpec(settings.output_topic, n, rf, {"cleanup.policy": "compact"}),
        TopicSpec(settings.dead_letter_topic, n, rf, {"cleanup.policy": "delete"}),
        TopicSpec(settings.failures_topic, n, rf, {"cleanup.policy": "delete"}),
    ]
    if catalog_topic:
        specs.append(TopicSpec(catalog_topic, n, rf, {"cleanup.policy": "compact"}))
    return specs


async def ensure_topics(settings: KafkaSettings, *, timeout_ms: int = 30_000,
                        catalog_topic: str | None = None) -> list[str]:
    """Create missing topics; return a list of problems with existing ones (empty when fine):
    a partition count or a ``cleanup.policy`` other than the spec's.  A topic the broker refuses
    to create (a replication factor above the broker count, a policy violation, no
    authorization) raises :class:`~streamer.errors.ConfigurationError` with the broker's reason.

    Safe to run again and again (the chart's pre-install/pre-upgrade hook): existing topics are
    only read, never altered."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=timeout_ms,
        **kafka_client_kwargs(settings),
    )
    try:
        await admin.start()
    except KafkaError as exc:
        raise BrokerUnavailableError(kafka_unreachable(settings, exc)) from exc
    try:
        specs = topic_specs(settings, catalog_topic)
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            await _create(admin, missing)
        present = [s for s in specs if s.name in existing]
        return await _differences(admin, present) if present else []
    finally:
        await admin.close()


async def _create(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> None:
    try:
        response = await admin.create_topics(
            [NewTopic(s.name, s.partitions, s.replication, topic_configs=s.config) for s in specs]
        )
    except TopicAlreadyExistsError:  # a concurrent creator; the checks below still run
        return
    refused = []
    for entry in response.topic_errors:  # (topic, error_code[, error_message])
        name, code = entry[0], entry[1]
        spec = next(s for s in specs if s.name == name)
        if code in (0, TopicAlreadyExistsError.errno):
            if code == 0:
                log.info("created topic %s (%d partitions, replication %d)", name,
                         spec.partitions, spec.replication)
            continue
        detail = entry[2] if len(entry) > 2 and entry[2] else ""
        refused.append(f"{name}: {for_code(code).__name__}{f' ({detail})' if detail else ''}")
    if refused:
        raise ConfigurationError(
            "the broker refused to create topics: " + "; ".join(refused) + ". Check "
            "STREAMER_KAFKA__REPLICATION_FACTOR (at most the number of brokers) and "
            "STREAMER_KAFKA__PARTITIONS, or create the topics yourself (`streamer topics ensure` "
            "then only checks them)")


async def _differences(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> list[str]:
    """How existing topics differ from their specs: partition count and ``cleanup.policy``."""
    problems = []
    described = await admin.describe_topics([s.name for s in specs])
    counts = {d["topic"]: len(d["partitions"]) for d in described}
    policies: dict[str, str] = {}
    for response in await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, s.name, {"cleanup.policy": None})
             for s in specs]):
        for _code, _message, _type, name, entries in response.resources:
            for entry in entries:
                if entry[0] == "cleanup.policy":
                    policies[name] = entry[1]
    for s in specs:
        if counts.get(s.name) != s.partitions:
            problems.append(
                f"topic {s.name} has {counts.get(s.name)} partitions, expected "
                f"{s.partitions} (STREAMER_KAFKA__PARTITIONS)"
            )
        want, got = s.config["cleanup.policy"], policies.get(s.name)
        if got is not None and set(got.split(",")) != set(want.split(",")):
            problems.append(f"topic {s.name} has cleanup.policy={got}, expected {want}")
    return problems
