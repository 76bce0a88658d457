"""The pending index: when windows are due, in which order, and what survives a failure."""

import pytest

from streamer.domain.pending import PendingIndex, WindowRules

pytestmark = pytest.mark.unit


def index(**rules):
    return PendingIndex(WindowRules(**{"max_events": 3, "max_age_s": 10, **rules}))


def test_closes_on_count_age_and_tokens():
    ix = index(max_tokens=100)
    ix.add("count", 0, now=0)
    ix.add("count", 0, now=1)
    assert ix.pop_due(1, 10) == []
    ix.add("count", 0, now=2)
    assert ix.pop_due(2, 10) == ["count"]
    ix.add("age", 0, now=5)
    assert ix.pop_due(14.9, 10) == []
    assert ix.pop_due(15, 10) == ["age"]
    ix.add("tokens", 0, tokens=150, now=20)
    assert ix.pop_due(20, 10) == ["tokens"]


def test_longest_waiting_first_and_limit():
    ix = index()
    for i, user in enumerate(["c", "a", "b"]):
        ix.add(user, 0, now=i)
    assert ix.pop_due(100, 2) == ["c", "a"]
    assert ix.pop_due(100, 2) == ["b"]


def test_min_interval_gates_the_next_update():
    ix = index(max_events=1, min_interval_s=30)
    ix.add("u", 0, now=0)
    assert ix.pop_due(0, 1) == ["u"]
    ix.take("u")
    ix.add("u", 0, now=1)  # arrives while in flight: joins the next window
    assert ix.done("u", 1, more=False, now=2) is False
    assert ix.pop_due(31.9, 1) == []
    assert ix.pop_due(32, 1) == ["u"]


def test_failure_gives_events_back_with_a_hold_and_counts_attempts():
    ix = index(max_events=1)
    ix.add("u", 0, now=0)
    ix.pop_due(0, 1)
    ix.take("u")
    assert ix.pending_events() == 0 and ix.in_flight == 1
    assert ix.failed("u", retry_at=5) == 1
    assert ix.pending_events() == 1 and ix.in_flight == 0
    assert ix.pop_due(4, 1) == []
    assert ix.pop_due(5, 1) == ["u"]


def test_done_forgets_an_empty_user_and_keeps_leftovers():
    ix = index(max_events=2)
    ix.add("u", 0, count=5, now=0)
    ix.pop_due(0, 1)
    ix.take("u")
    assert ix.done("u", 2, more=True, now=1) is False  # a capped read left events behind
    assert ix.get("u").count == 3 and ix.get("u").first_at == 0
    ix.pop_due(1, 1)
    ix.take("u")
    assert ix.done("u", 3, more=False, now=2) is True
    assert "u" not in ix and len(ix) == 0 and ix.pending_events() == 0


def test_recover_and_forget_by_partition():
    ix = index()
    ix.recover("a", 1, first_at=0.0)
    ix.recover("b", 2, first_at=0.0)
    assert ix.pop_due(10, 10) == ["a", "b"]  # overdue after the rebuild: due at once
    assert ix.users_of([2]) == ["b"]
    assert ix.forget(["b"]) == 1 and "b" not in ix


def test_memory_per_user_does_not_grow_with_window_length():
    ix = index(max_events=10**9, max_age_s=10**9)
    for i in range(10_000):
        ix.add("heavy", 0, now=i)
    w = ix.get("heavy")
    assert w.count == 10_000 and len(ix) == 1
    assert len(ix._timers) < 20_000  # lazily invalidated entries, O(changes) not O(events)


def test_events_read_by_an_update_that_arrived_as_it_started_are_not_counted_twice():
    ix = index(max_events=1)
    ix.add("u", 0, now=0)
    ix.pop_due(0, 1)
    ix.take("u")
    ix.add("u", 0, now=0.1)
    ix.add("u", 0, now=0.2)
    assert ix.done("u", 2, more=False, now=1) is False  # read 2: one of them arrived late
    assert ix.get("u").count == 1


def test_token_bucket_limits_tokens_per_second_and_never_starves_a_big_window():
    from streamer.domain.pending import TokenBucket

    b = TokenBucket(rate=100)
    assert b.take(60, now=0) and not b.take(60, now=0)  # 40 left
    assert not b.take(60, now=0.1) and b.take(60, now=0.2)  # refilled to 60
    big = TokenBucket(rate=100)
    assert big.take(500, now=0)  # full bucket: a window larger than the burst may start
    assert not big.take(1, now=1)  # ...and the debt is paid back before the next one
    assert big.take(1, now=5)
