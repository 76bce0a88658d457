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

Per-record cost: faust's fetch loop hands each record to the streams with
``wait_first(callback(message), self.suspend_flow.wait())``, and mode's generic ``wait_first``
starts four tasks per call (the delivery, and waits on the suspend, stopped and crashed events)
then cancels three.  :meth:`BufferedPositionConsumer.wait_first` keeps that race for this one
call: the delivery's first step runs in place (no task when it does not block, the common case);
one that blocks becomes a task raced against waiters that live while the events stay clear.
"""

from __future__ import annotations

import asyncio
import inspect
import types
from collections.abc import Awaitable, Generator
from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaFaustConsumer
from faust.types import TP
from mode.services import WaitResults


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

    _flow_waiters: tuple[asyncio.Future[Any], ...] = ()

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        if timeout is None and len(coros) == 2 and _waits_on(coros[1], self.suspend_flow):
            coros[1].close()  # never started: replaced by a long-lived waiter
            return await self._deliver(coros[0])
        return await super().wait_first(*coros, timeout=timeout)

    async def _deliver(self, delivery: Awaitable[Any]) -> WaitResults:
        """``delivery`` (one record to the streams), unless the flow is suspended (rebalance),
        or the consumer stops or crashes first: then it is cancelled, as mode's version does."""
        events = (self.suspend_flow, self._stopped, self._crashed)
        if any(e.is_set() for e in events):
            if inspect.iscoroutine(delivery):
                delivery.close()
            return WaitResults([], [], True)
        if not self._flow_waiters or any(w.done() for w in self._flow_waiters):
            for w in self._flow_waiters:
                w.cancel()
            self._flow_waiters = tuple(asyncio.ensure_future(e.wait()) for e in events)
        if inspect.iscoroutine(delivery):
            # first step in place: a delivery that does not block (the stream's queue has room,
            # the common case) needs no task at all
            try:
                blocked_on = delivery.send(None)
            except StopIteration as stop:
                return WaitResults([delivery], [stop.value], False)
            task = asyncio.ensure_future(_resume(delivery, blocked_on))
        else:
            task = asyncio.ensure_future(delivery)
        done, _ = await asyncio.wait((task, *self._flow_waiters),
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return WaitResults([delivery], [task.result()], False)
        task.cancel()
        return WaitResults([], [], True)

    async def on_stop(self) -> None:
        self.cancel_flow_waiters()
        await super().on_stop()

    def cancel_flow_waiters(self) -> None:
        """Cancel the long-lived suspend/stop/crash waiters of :meth:`wait_first`."""
        for w in self._flow_waiters:
            w.cancel()
        self._flow_waiters = ()


@types.coroutine
def _resume(coro: Any, blocked_on: Any) -> Generator[Any, Any, Any]:
    """Finish a coroutine whose first step ran in the caller's task: what it yielded is handed to
    the task running this generator, which resumes it as asyncio's Task would (a value or an
    exception, e.g. the cancellation, thrown back in)."""
    while True:
        try:
            value = yield blocked_on
        except BaseException as exc:  # noqa: BLE001 - passed on to the coroutine
            try:
                blocked_on = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            blocked_on = coro.send(value)
        except StopIteration as stop:
            return stop.value


def _waits_on(coro: Any, event: Any) -> bool:
    """Whether ``coro`` is an unstarted ``event.wait()``."""
    return (inspect.iscoroutine(coro) and coro.cr_code is type(event).wait.__code__
            and coro.cr_frame is not None and coro.cr_frame.f_locals.get("self") is event)
