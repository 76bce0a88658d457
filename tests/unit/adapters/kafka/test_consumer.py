"""The worker commits the position up to which every record is buffered, whatever offsets hold
no record (transaction markers), and never from faust's acknowledgements."""

import asyncio
import inspect
from collections import defaultdict

import pytest
from faust.types import TP as FaustTP
from intervaltree import IntervalTree

from streamer.adapters.kafka.consumer import BufferedPositionConsumer

TP = FaustTP("t", 0)


def consumer(committed=None):
    c = object.__new__(BufferedPositionConsumer)
    c._acked = defaultdict(list)
    c._acked_index = defaultdict(set)
    c._gap = defaultdict(IntervalTree)
    c._committed_offset = defaultdict(lambda: None)
    c._committed_offset[TP] = committed
    c.positions = {}
    return c


def ack(c, *offsets):
    for o in offsets:
        c._acked[TP].append(o)
        c._acked_index[TP].add(o)


def test_nothing_buffered_commits_nothing_even_if_faust_acknowledged():
    c = consumer(None)
    ack(c, 0, 1, 2)  # take_events acknowledges a batch even when its body raised
    assert c._new_offset(TP) is None


def test_transaction_markers_between_records_do_not_stop_commits():
    # one record per upstream transaction: records at even offsets, commit markers at odd ones
    c = consumer(None)
    ack(c, 0, 2, 4, 6)
    c.positions[("t", 0)] = 7  # the intake buffered up to offset 6
    assert c._new_offset(TP) == 7
    c._committed_offset[TP] = 7
    assert c._new_offset(TP) is None  # nothing new buffered since
    c.positions[("t", 0)] = 11
    assert c._new_offset(TP) == 11


def test_acked_bookkeeping_does_not_grow():
    c = consumer(None)
    for batch in range(100):
        ack(c, *range(batch * 10, batch * 10 + 10))
        c.positions[("t", 0)] = batch * 10 + 10
        assert c._new_offset(TP) == batch * 10 + 10
        c._committed_offset[TP] = batch * 10 + 10
    assert not c._acked[TP] and not c._acked_index[TP]


# --- per-record delivery (faust's drain loop: wait_first(callback(message), suspend.wait())) ----

def flow_consumer():
    from mode.utils.locks import Event

    c = consumer(None)
    c.suspend_flow = asyncio.Event()
    c._stopped, c._crashed = Event(), Event()
    return c


async def test_a_delivery_that_does_not_block_needs_no_task():
    c = flow_consumer()
    seen = []

    async def deliver(message):
        seen.append(message)
        return "delivered"

    tasks = len(asyncio.all_tasks())
    result = await c.wait_first(deliver("m1"), c.suspend_flow.wait())
    assert (result.results, result.stopped, seen) == (["delivered"], False, ["m1"])
    assert len(asyncio.all_tasks()) == tasks + 3  # only the long-lived suspend/stop/crash waiters
    await c.wait_first(deliver("m2"), c.suspend_flow.wait())
    assert len(asyncio.all_tasks()) == tasks + 3 and seen == ["m1", "m2"]
    c.cancel_flow_waiters()


async def test_a_blocked_delivery_finishes_when_the_stream_makes_room():
    c = flow_consumer()
    queue: asyncio.Queue = asyncio.Queue(maxsize=1)
    queue.put_nowait("m0")

    async def deliver(message):
        await queue.put(message)  # blocks: the stream's buffer is full
        return message

    pending = asyncio.create_task(c.wait_first(deliver("m1"), c.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    assert not pending.done()
    assert await queue.get() == "m0"
    result = await pending
    assert (result.results, result.stopped) == (["m1"], False) and queue.get_nowait() == "m1"
    c.cancel_flow_waiters()


async def test_a_blocked_delivery_is_cancelled_when_the_flow_is_suspended():
    c = flow_consumer()
    queue: asyncio.Queue = asyncio.Queue(maxsize=1)
    queue.put_nowait("m0")
    cancelled = asyncio.Event()

    async def deliver(message):
        try:
            await queue.put(message)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    pending = asyncio.create_task(c.wait_first(deliver("m1"), c.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    c.suspend_flow.set()  # a rebalance: the record is not handed to the streams
    result = await pending
    assert result.stopped and result.results == []
    await asyncio.wait_for(cancelled.wait(), 1)
    assert queue.qsize() == 1 and queue.get_nowait() == "m0"
    # once the flow resumes, deliveries go through again (fresh waiters)
    c.suspend_flow.clear()
    result = await c.wait_first(queue.put("m2"), c.suspend_flow.wait())
    assert not result.stopped and queue.get_nowait() == "m2"
    c.cancel_flow_waiters()


async def test_nothing_is_delivered_while_suspended_or_stopped():
    c = flow_consumer()
    ran = []

    async def deliver(message):
        ran.append(message)

    c.suspend_flow.set()
    assert (await c.wait_first(deliver("m1"), c.suspend_flow.wait())).stopped
    c.suspend_flow.clear()
    c._stopped.set()
    assert (await c.wait_first(deliver("m2"), c.suspend_flow.wait())).stopped
    assert ran == []


async def test_a_failing_delivery_raises_as_with_mode():
    c = flow_consumer()

    async def at_once(message):
        raise ValueError("bad record")

    async def later(message):
        await asyncio.sleep(0)
        raise ValueError("bad record, later")

    with pytest.raises(ValueError, match="bad record"):
        await c.wait_first(at_once("m"), c.suspend_flow.wait())
    with pytest.raises(ValueError, match="later"):
        await c.wait_first(later("m"), c.suspend_flow.wait())
    c.cancel_flow_waiters()


def test_faust_still_delivers_records_the_way_the_fast_path_expects():
    # the override recognises this exact call in faust's fetch loop (faust-streaming is pinned);
    # if an upgrade changes it, the records take mode's generic (slower) wait_first instead
    from faust.transport.consumer import Consumer

    source = inspect.getsource(Consumer._drain_messages)
    assert "self.wait_first(" in source and "callback(message), self.suspend_flow.wait()" in source
