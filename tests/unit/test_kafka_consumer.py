"""Offset commits must never skip an unacknowledged record (faust 0.15.3's rule could)."""

from collections import defaultdict

from intervaltree import IntervalTree

from streamer.adapters.kafka.consumer import ContiguousAckConsumer

TP = ("t", 0)


def consumer(committed=None):
    c = object.__new__(ContiguousAckConsumer)
    c._acked = defaultdict(list)
    c._acked_index = defaultdict(set)
    c._gap = defaultdict(IntervalTree)
    c._committed_offset = defaultdict(lambda: None)
    c._committed_offset[TP] = committed
    c._first_seen = {}
    return c


def ack(c, *offsets):
    for o in offsets:
        c._acked[TP].append(o)
        c._acked_index[TP].add(o)


def test_nothing_committed_yet_and_first_record_pending_commits_nothing():
    c = consumer(None)
    c._first_seen[TP] = 0
    ack(c, 1, 2, 3)  # offset 0 is still in a window
    assert c._new_offset(TP) is None
    ack(c, 0)
    assert c._new_offset(TP) == 4


def test_committed_zero_is_not_treated_as_unknown():
    c = consumer(0)
    ack(c, 1, 2)
    assert c._new_offset(TP) is None


def test_a_gap_of_exactly_one_record_blocks_the_commit():
    c = consumer(10)
    ack(c, 11, 12)  # 10 not acknowledged: faust's `min - committed > 1` let this through
    assert c._new_offset(TP) is None
    ack(c, 10)
    assert c._new_offset(TP) == 13


def test_contiguous_prefix_only_and_offsets_that_do_not_exist_count_as_acked():
    c = consumer(5)
    ack(c, 5, 6, 9)
    assert c._new_offset(TP) == 7
    c._committed_offset[TP] = 7
    c._gap[TP].addi(7, 9)  # offsets 7 and 8 do not exist (e.g. transaction markers)
    assert c._new_offset(TP) == 10


def test_first_seen_tracks_the_lowest_fetched_offset():
    c = consumer(None)
    for offset in (5, 4, 6):
        c.note_fetched(TP, offset)
    assert c._first_seen[TP] == 4
    ack(c, 4, 5)
    assert c._new_offset(TP) == 6
