"""Sending records to Kafka: one :class:`~streamer.ports.RecordSender` per process.

* :class:`KafkaSender` is a plain idempotent aiokafka producer, started on first use (so a
  process that never writes, such as the read API serving only reads, needs no broker); used by
  the read API, backfill and ``streamer parked retry``.
* :class:`FaustSender` sends through the worker's faust producer (:class:`IdempotentProducer`),
  so change events, failure notices and dead letters share its connection and its flush on
  shutdown.

Both resolve only when the broker has acknowledged the record (``acks=all``), and both translate
aiokafka's exceptions into the error tree (:func:`translate`): a retriable Kafka error becomes
:class:`~streamer.errors.BrokerUnavailableError`, anything else
:class:`~streamer.errors.PublishRejectedError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from faust.transport.drivers.aiokafka import Producer as _FaustProducer

from ...errors import BrokerUnavailableError, PublishRejectedError, StreamerError
from ...settings import KafkaSettings
from ..security import kafka_client_kwargs, kafka_unreachable

Headers = Sequence[tuple[str, bytes]]


def translate(exc: BaseException, topic: str) -> StreamerError:
    """A Kafka client exception as a :class:`StreamerError` (see the module docstring)."""
    if isinstance(exc, KafkaError) and not exc.retriable:
        return PublishRejectedError(f"Kafka refused a record for {topic}: {exc!r}")
    return BrokerUnavailableError(f"Kafka unavailable while sending to {topic}: {exc!r}")


_SEND_ERRORS = (KafkaError, TimeoutError, ConnectionError, OSError)


class KafkaSender:
    """An idempotent aiokafka producer (``acks=all``), started on the first send."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Connect now (idempotent); raises :class:`BrokerUnavailableError` when Kafka is down."""
        async with self._lock:
            if self._producer is not None:
                return
            producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap_servers,
                                        acks="all", enable_idempotence=True,
                                        **kafka_client_kwargs(self.settings))
            try:
                await producer.start()
            except _SEND_ERRORS as exc:
                await producer.stop()
                raise BrokerUnavailableError(kafka_unreachable(self.settings, exc)) from exc
            self._producer = producer

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   headers: Headers) -> None:
        await self.start()
        assert self._producer is not None
        try:
            await self._producer.send_and_wait(topic, value, key=key, headers=list(headers))
        except _SEND_ERRORS as exc:
            raise translate(exc, topic) from exc

    async def aclose(self) -> None:
        async with self._lock:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None


class FaustSender:
    """Sends through a faust app's producer (the worker's)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   headers: Headers) -> None:
        try:
            await self.app.producer.send_and_wait(topic, key, value, None, None, list(headers))
        except _SEND_ERRORS as exc:
            raise translate(exc, topic) from exc

    async def aclose(self) -> None:  # the faust app owns and stops its producer
        return None


class IdempotentProducer(_FaustProducer):
    """faust's aiokafka producer with ``enable_idempotence``: a retried send never duplicates
    or reorders a record within a partition (each user's versions stay in order)."""

    def _settings_extra(self) -> Mapping[str, object]:
        return {**super()._settings_extra(), "enable_idempotence": True}
