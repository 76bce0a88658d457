"""CassandraPendingBuffer against a real Cassandra: idempotent buffering, ordered partition
index writes, recovery by partition, parking."""

import time

import pytest

from streamer.adapters.cassandra.pending import CassandraPendingBuffer
from streamer.ports import ParkedWindow, PendingEntry, PendingUser


@pytest.fixture
def buffer(store):
    return CassandraPendingBuffer.from_store(store)


def entry(user, eid, offset, value=None, partition=0):
    value = value or f'{{"event_id": "{eid}"}}'.encode()
    return PendingEntry(user, eid, f"d-{hash(value) & 0xffff:x}", partition, offset, value,
                        buffered_at=time.time(), tokens=len(value) // 3,
                        traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01", kafka_ts=1.5)


async def test_add_is_idempotent_and_read_is_in_offset_order(buffer):
    rows = [entry("pu1", f"e{i}", 10 - i) for i in range(5)]
    await buffer.add(rows, [PendingUser("pu1", 0, 100.0)], stamp_us=1)
    await buffer.add(rows[:2], [], stamp_us=2)  # a redelivery: overwrites its own rows
    got = await buffer.read("pu1", 100)
    assert [e.event_id for e in got] == ["e4", "e3", "e2", "e1", "e0"]
    assert got[0].value == rows[4].value and got[0].traceparent == rows[4].traceparent
    assert got[0].kafka_ts == 1.5 and got[0].tokens == rows[4].tokens
    assert len(await buffer.read("pu1", 2)) == 2


async def test_same_event_id_with_other_content_is_a_second_row(buffer):
    a, b = entry("pu2", "e1", 1, b'{"a": 1}'), entry("pu2", "e1", 2, b'{"a": 2}')
    await buffer.add([a, b], [], stamp_us=1)
    assert sorted(e.digest for e in await buffer.read("pu2", 10)) == sorted([a.digest, b.digest])


async def test_remove_and_partition_index_ordered_by_stamp(buffer):
    rows = [entry("pu3", "e1", 1, partition=5), entry("pu3", "e2", 2, partition=5)]
    await buffer.add(rows, [PendingUser("pu3", 5, 50.0)], stamp_us=10)
    assert await buffer.users([5]) == [PendingUser("pu3", 5, 50.0)]
    await buffer.remove("pu3", rows[:1], user_done=None, stamp_us=11)
    assert [e.event_id for e in await buffer.read("pu3", 10)] == ["e2"]
    # a removal stamped before a later add must not delete the newer index row
    await buffer.add([], [PendingUser("pu3", 5, 60.0)], stamp_us=30)
    await buffer.remove("pu3", rows[1:], user_done=PendingUser("pu3", 5, 0), stamp_us=20)
    assert await buffer.users([5]) == [PendingUser("pu3", 5, 60.0)]
    await buffer.remove("pu3", [], user_done=PendingUser("pu3", 5, 0), stamp_us=40)
    assert await buffer.users([5]) == [] and await buffer.read("pu3", 10) == []


async def test_park_list_and_unpark(buffer):
    rows = (entry("pu4", "e1", 1), entry("pu4", "e2", 2))
    await buffer.park(ParkedWindow("pu4", "w1", 0, "model_request", "400: refused", 5,
                                   time.time(), rows))
    (parked,) = await buffer.parked("pu4")
    assert parked.error_type == "model_request" and parked.attempts == 5
    assert [e.value for e in parked.entries] == [r.value for r in rows]
    assert any(p.window_id == "w1" for p in await buffer.parked())
    await buffer.unpark("pu4", "w1")
    assert await buffer.parked("pu4") == []
