"""The worker commits the position up to which every record is buffered, whatever offsets hold
no record (transaction markers), and never from faust's acknowledgements."""

from collections import defaultdict

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
