"""Publishing to Kafka: change events and dead letters.

Both take a ``send`` coroutine ``(topic, key, value, headers) -> None`` that resolves only when
the broker has acknowledged the record (faust's ``producer.send_and_wait`` in the worker, a
plain aiokafka producer elsewhere), so callers can commit input offsets afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from schemas import DeadLetter, SummaryChanged, SummaryUpdateFailed

from ...errors import InvalidEventError
from ...telemetry import outgoing_trace_headers
from .codec import encode_model

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]
Send = Callable[[str, bytes | None, bytes | None, Headers], Awaitable[None]]


class KafkaChangePublisher:
    """Publishes :class:`SummaryChanged` (and failure notices) keyed by user id."""

    def __init__(self, send: Send, topic: str, failures_topic: str | None = None) -> None:
        self._send = send
        self.topic = topic
        self.failures_topic = failures_topic

    async def publish(self, event: SummaryChanged) -> None:
        await self._publish(self.topic, event)

    async def publish_failure(self, event: SummaryUpdateFailed) -> None:
        if self.failures_topic:
            await self._publish(self.failures_topic, event)

    async def _publish(self, topic: str, event: SummaryChanged | SummaryUpdateFailed) -> None:
        headers = [("content-type", b"application/json"), ("type", event.type.encode()),
                   *outgoing_trace_headers()]  # W3C traceparent of the window's update span
        await self._send(topic, event.user_id.encode(), encode_model(event), headers)


class DeadLetterPublisher:
    """Sends an invalid record, untouched, to the dead-letter topic with the reason in headers."""

    def __init__(self, send: Send, topic: str, *, consumer_group: str | None = None) -> None:
        self._send = send
        self.topic = topic
        self.consumer_group = consumer_group

    async def publish(
        self,
        error: InvalidEventError,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        source_topic: str,
        partition: int,
        offset: int,
    ) -> DeadLetter:
        envelope = DeadLetter(
            error_type=error.code,
            error_message=str(error)[:500],
            source_topic=source_topic,
            source_partition=partition,
            source_offset=offset,
            failed_at=datetime.now(UTC),
            consumer_group=self.consumer_group,
        )
        original = [(k, v) for k, v in headers if not k.startswith("x-dlq-")]
        await self._send(self.topic, key, value, [*original, *envelope.to_headers()])
        log.info(
            "dead-lettered %s:%d@%d (%s)", source_topic, partition, offset, error.code
        )
        return envelope
