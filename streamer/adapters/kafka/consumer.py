"""A faust consumer whose offset commits never skip an unacknowledged record.

The worker acknowledges records out of order (a record is acknowledged only when the version
that includes it is stored), so correctness depends on committing only the contiguous run of
acknowledged offsets that starts at the committed position.  faust-streaming 0.15.3's
``Consumer._new_offset`` does not guarantee that: its head-gap check (``min(acked) - committed >
1``) misses a gap of exactly one record, and it is skipped entirely while nothing has been
committed yet for the partition (committed ``None`` or ``0``), so a crash could lose the first
records of a partition that were still pending in a window.  This subclass fixes the check; the
rest (faust's tracking of offsets that do not exist, e.g. transaction markers) is unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from faust.transport.drivers.aiokafka import Consumer as AIOKafkaFaustConsumer
from faust.types import TP
from faust.utils.functional import consecutive_numbers


class ContiguousAckConsumer(AIOKafkaFaustConsumer):
    """aiokafka-driver consumer with a correct "commit only a contiguous prefix" rule."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._first_seen: dict[TP, int] = {}

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        # the first record fetched for a partition is where consumption started: the commit
        # base while the group has no committed offset for it yet
        async for tp, message in super().getmany(timeout):
            self.note_fetched(tp, message.offset)
            yield tp, message

    def note_fetched(self, tp: TP, offset: int) -> None:
        current = self._first_seen.get(tp)
        if current is None or offset < current:
            self._first_seen[tp] = offset

    def _new_offset(self, tp: TP) -> int | None:
        acked = self._acked[tp]
        if not acked:
            return None
        gap_for_tp = self._gap[tp]
        if gap_for_tp:  # offsets that do not exist count as acknowledged (faust's logic)
            max_offset = max(acked)
            candidates = sorted(gap_for_tp.overlap(0, max_offset), key=lambda x: x.begin)
            if candidates:
                stuff: list[int] = []
                for entry in candidates:
                    stuff.extend(range(entry.begin, entry.end))
                acked.extend(o for o in stuff if o not in self._acked_index[tp])
                self._acked_index[tp].update(stuff)
                gap_for_tp.chop(0, max(stuff[-1], max_offset + 1))
        acked.sort()
        expected = self._committed_offset[tp]  # next offset to commit past
        if expected is None:
            expected = self._first_seen.get(tp)
        if expected is None or acked[0] > expected:
            return None  # the record at `expected` is not acknowledged yet
        batch = next(consecutive_numbers(acked))
        acked[: len(batch)] = []
        self._acked_index[tp].difference_update(batch)
        return batch[-1] + 1
