"""Every worker's view of the item catalog: the compacted catalog topic, materialized in memory.

:class:`CatalogFollower` assigns itself every partition of the topic (no consumer group: each
worker holds the whole catalog, like a faust GlobalTable or a Kafka Streams GlobalKTable), reads
each from its beginning, then follows it.  It is *caught up* once every partition reached the
end offset it had when the follower started; until then the worker is not ready and the
scheduler does not resolve items (an item not loaded yet is not "unknown").

Why memory and not a Cassandra ``items`` table: a window's items are looked up when it closes,
several per event (48 for a 16-event news window), on the scheduler's path; ``make bench``
(phase ``catalog``) measures an in-memory lookup at thousands of times the rate of a Cassandra
point read on loopback.  The cost is memory, also measured there: about 1.5 kB per MIND-sized
news item (a 60-character title, a 200-character abstract), so a million items take about
1.5 GB in every worker; far beyond that, a store-backed lookup with a local cache is the next
step (not built).

A record that is not a valid catalog item is skipped and counted (``invalid``), with a warning
log: the catalog keeps loading.  Partitions added to the topic after the follower started are
not followed until the worker restarts.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import ConsumerStoppedError

from ...domain.catalog import Catalog
from ...errors import ConfigurationError, InvalidEventError
from ...settings import KafkaSettings
from .topic_reader import assign_whole_topic, start_reader

log = logging.getLogger(__name__)


class CatalogFollower:
    def __init__(self, kafka: KafkaSettings, topic: str, catalog: Catalog | None = None, *,
                 poll_ms: int = 500, max_records: int = 2000) -> None:
        self.kafka = kafka
        self.topic = topic
        self.catalog = catalog if catalog is not None else Catalog()
        self.poll_ms = poll_ms
        self.max_records = max_records
        self.records = 0  # catalog records applied (items and tombstones)
        self.invalid = 0  # records skipped: not a catalog item
        self._consumer: AIOKafkaConsumer | None = None
        self._targets: dict[TopicPartition, int] = {}  # end offsets at start
        self._caught_up = asyncio.Event()
        self._stopping = False

    @property
    def caught_up(self) -> bool:
        return self._caught_up.is_set()

    @property
    def items(self) -> int:
        return len(self.catalog)

    def status(self) -> dict[str, Any]:
        return {"topic": self.topic, "items": len(self.catalog), "caught_up": self.caught_up,
                "records": self.records, "invalid": self.invalid}

    async def start(self) -> None:
        """Connect, assign every partition and seek each to its beginning."""
        consumer = await start_reader(self.kafka)
        try:
            ends = await assign_whole_topic(consumer, self.topic)
            if ends is None:
                raise ConfigurationError(
                    f"the catalog topic {self.topic!r} does not exist: create it with "
                    "`streamer topics ensure` (STREAMER_CATALOG__ENABLED=true) or turn the "
                    "catalog off (STREAMER_CATALOG__ENABLED=false)")
            self._targets = ends
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        log.info("catalog: loading %s (%d partitions)", self.topic, len(ends))
        await self._check_caught_up()

    async def run(self) -> None:
        """Apply records until :meth:`stop` (starts first if needed)."""
        if self._consumer is None:
            await self.start()
        consumer = self._consumer
        assert consumer is not None
        while not self._stopping:
            try:
                batch = await consumer.getmany(timeout_ms=self.poll_ms,
                                               max_records=self.max_records)
            except ConsumerStoppedError:
                if self._stopping:
                    return
                raise
            for records in batch.values():
                for record in records:
                    self.apply(record.key, record.value)
            if not self.caught_up:
                await self._check_caught_up()

    async def wait_caught_up(self, timeout_s: float | None = None) -> None:
        await asyncio.wait_for(self._caught_up.wait(), timeout_s)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        try:
            self.catalog.apply(key, value)
        except InvalidEventError as exc:
            self.invalid += 1
            if self.invalid <= 10 or self.invalid % 1000 == 0:
                log.warning("catalog: record skipped (%s: %s); %d skipped so far",
                            exc.code, exc, self.invalid)
            return
        self.records += 1

    async def stop(self) -> None:
        self._stopping = True
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def _check_caught_up(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        for tp, end in self._targets.items():
            if await consumer.position(tp) < end:
                return
        if not self.caught_up:
            log.info("catalog: %d items loaded from %s (%d records, %d skipped)",
                     len(self.catalog), self.topic, self.records, self.invalid)
        self._caught_up.set()
