"""The worker's faust consumer: commits the position up to which every record is buffered.

The worker's intake handles records in consumption order, one batch at a time, and records in
``positions`` (per partition) the offset after the last record of a batch that is durably
buffered or dead-lettered.  Every record of a partition below that position has been handled, so
it is safe to commit.  faust's acknowledgements are not used for this (``take_events``
acknowledges a batch even when its body raised); its bookkeeping is only cleared.  No guess
about gaps is needed: offsets that hold no record (transaction markers, aborted records skipped
under ``read_committed``, compacted records) are simply passed over.  faust's own rule (commit the
first run of consecutive acknowledged offsets) stops at such a gap, or, with its head-gap check,
commits past a pending record; neither happens here.

faust commits on ``broker_commit_interval`` (``STREAMER_KAFKA__COMMIT_INTERVAL_S``); a revoked
partition's position is dropped, so its new owner re-reads at most one commit interval (the
buffer writes are idempotent).

The consumer also reads with ``isolation_level=read_committed``, so records of aborted or open
upstream transactions are never buffered.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaFaustConsumer
from faust.types import TP


class ReadCommittedConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"  # read at start(), by the fetcher
        return consumer


class BufferedPositionConsumer(AIOKafkaFaustConsumer):
    """aiokafka-driver consumer committing the intake's buffered position per partition."""

    positions: dict[Any, int] | None = None  # (topic, partition) -> next offset; set by the app

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _new_offset(self, tp: TP) -> int | None:
        self._acked[tp].clear()
        self._acked_index[tp].clear()
        self._gap[tp].clear()
        positions = self.positions
        if positions is None:
            return None
        position = positions.get((tp.topic, tp.partition))
        committed = self._committed_offset[tp]
        if position is None or (committed is not None and position <= committed):
            return None
        return position
