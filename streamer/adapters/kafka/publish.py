"""Publishing to Kafka: change events and dead letters.

Both take a ``send`` coroutine ``(topic, key, value, headers) -> None`` that resolves only when
the broker has acknowledged the record (faust's ``producer.send_and_wait`` in the worker, a
plain aiokafka producer elsewhere), so callers can commit input offsets afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from schemas import DeadLetter, SummaryChanged, SummaryDeleted, SummaryUpdateFailed, ce_headers

from ...domain.codec import encode_model
from ...errors import ConfigurationError, InvalidEventError
from ...telemetry import outgoing_trace_headers

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]
Send = Callable[[str, bytes | None, bytes | None, Headers], Awaitable[None]]


class KafkaChangePublisher:
    """Publishes :class:`SummaryChanged` (and failure notices) keyed by user id, as CloudEvents
    in binary mode (:mod:`schemas.cloudevents`: ``ce_*`` headers, the event JSON as the value)."""

    def __init__(self, send: Send, topic: str, failures_topic: str | None = None, *,
                 source: str = "/prefstream") -> None:
        self._send = send
        self.topic = topic
        self.failures_topic = failures_topic
        self.source = source

    async def publish(self, event: SummaryChanged) -> None:
        await self._publish(self.topic, event)

    async def publish_failure(self, event: SummaryUpdateFailed) -> None:
        if self.failures_topic:
            await self._publish(self.failures_topic, event)

    async def publish_deleted(self, event: SummaryDeleted) -> None:
        """The deletion event, then a tombstone for the key: compaction then removes every
        earlier record of the user from the summaries topic."""
        await self._publish(self.topic, event)
        await self._send(self.topic, event.user_id.encode(), None, ())

    async def _publish(self, topic: str,
                       event: SummaryChanged | SummaryUpdateFailed | SummaryDeleted) -> None:
        headers = [*ce_headers(event, self.source), ("type", event.type.encode()),
                   *outgoing_trace_headers()]  # W3C traceparent of the window's update span
        await self._send(topic, event.user_id.encode(), encode_model(event), headers)


class DeadLetterPublisher:
    """Sends an invalid record, untouched, to the dead-letter topic with the reason in headers.

    A record that would not fit in ``max_record_bytes`` (key + value + headers; keep it below
    the dead-letter topic's ``max.message.bytes`` and the producer's ``max_request_size``) is
    sent with a prefix of its value instead, leaving :attr:`SAFETY_MARGIN` bytes spare, and
    ``x-dlq-truncated: true``; if the key and headers alone are too large, the largest original
    headers are dropped and, as a last resort, the key is cut too.  Every dead letter carries
    ``x-dlq-original-size`` (bytes of the original value, 0 for a tombstone).
    """

    SAFETY_MARGIN = 16 * 1024
    """Bytes a truncated dead letter leaves unused below ``max_record_bytes``."""
    _RECORD_OVERHEAD = 61 + 21 + 10  # batch header, record framing (varints), header count
    _HEADER_OVERHEAD = 10  # two varint lengths per header

    def __init__(
        self,
        send: Send,
        topic: str,
        *,
        consumer_group: str | None = None,
        max_record_bytes: int = 900_000,
    ) -> None:
        if max_record_bytes < 2 * self.SAFETY_MARGIN:
            raise ConfigurationError(
                f"max_record_bytes={max_record_bytes} leaves no room for a dead letter "
                f"(minimum {2 * self.SAFETY_MARGIN})"
            )
        self._send = send
        self.topic = topic
        self.consumer_group = consumer_group
        self.max_record_bytes = max_record_bytes

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
        fields: dict[str, Any] = {
            "error_type": error.code,
            "error_message": self._printable(str(error))[:500],
            "source_topic": source_topic,
            "source_partition": partition,
            "source_offset": offset,
            "failed_at": datetime.now(UTC),
            "consumer_group": self.consumer_group,
            "original_size": len(value) if value is not None else 0,
        }
        envelope = DeadLetter(**fields)
        original = [(k, v) for k, v in headers if not k.startswith("x-dlq-")]
        size = self.record_size(key, value, [*original, *envelope.to_headers()])
        if size > self.max_record_bytes:
            envelope = DeadLetter(**fields, truncated=True)
            key, value, original = self._fit(key, value, original, envelope.to_headers())
            log.warning(
                "dead letter of %s:%d@%d (value %d bytes) exceeds %d bytes: sending the first %d",
                source_topic, partition, offset, envelope.original_size or 0,
                self.max_record_bytes, len(value or b""),
            )
        await self._send(self.topic, key, value, [*original, *envelope.to_headers()])
        log.info(
            "dead-lettered %s:%d@%d (%s)", source_topic, partition, offset, error.code
        )
        return envelope

    def _fit(
        self, key: bytes | None, value: bytes | None, original: list[tuple[str, bytes]],
        envelope_headers: list[tuple[str, bytes]],
    ) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
        """Cut value, then original headers (largest first), then key to fit the budget."""
        budget = self.max_record_bytes - self.SAFETY_MARGIN
        room = budget - self.record_size(key, b"", [*original, *envelope_headers])
        if value is not None:
            value = value[: max(room, 0)]
        if room < 0 and original:
            by_size = sorted(range(len(original)), key=lambda i: -self._header_size(original[i]))
            dropped: set[int] = set()
            for i in by_size:
                if room >= 0:
                    break
                dropped.add(i)
                room += self._header_size(original[i])
            log.warning("dead letter: dropped %d oversized original header(s)", len(dropped))
            original = [h for i, h in enumerate(original) if i not in dropped]
        if room < 0 and key:
            log.warning("dead letter: key of %d bytes cut to fit", len(key))
            key = key[: max(len(key) + room, 0)]
        return key, value, original

    @classmethod
    def record_size(cls, key: bytes | None, value: bytes | None, headers: Headers) -> int:
        """Upper bound of the bytes a record takes in a Kafka batch (record format v2)."""
        return (
            cls._RECORD_OVERHEAD
            + len(key or b"")
            + len(value or b"")
            + sum(cls._header_size(h) for h in headers)
        )

    @classmethod
    def _header_size(cls, header: tuple[str, bytes | None]) -> int:
        k, v = header
        return cls._HEADER_OVERHEAD + len(k.encode("utf-8", "surrogatepass")) + len(v or b"")

    @staticmethod
    def _printable(text: str) -> str:
        """``text`` with anything that is not encodable UTF-8 (lone surrogates) escaped."""
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
