import pytest

from streamer.domain.windowing import WindowBook, window_id
from tests.factories import pairwise

pytestmark = pytest.mark.unit


def test_window_closes_on_count():
    book = WindowBook(max_events=3, max_age_s=100)
    for i in range(2):
        book.add(pairwise(f"e{i}"), i, now=0)
    assert not book.is_due("u1", 1)
    book.add(pairwise("e2"), 2, now=1)
    assert book.due(1) == ["u1"]
    w = book.take("u1")
    assert w.event_ids == ("e0", "e1", "e2") and w.handles == (0, 1, 2)


def test_window_closes_on_age_and_oldest_first():
    book = WindowBook(max_events=10, max_age_s=5)
    book.add(pairwise("a", "u2"), None, now=1)
    book.add(pairwise("b", "u1"), None, now=0)
    assert book.due(4) == []
    assert book.due(6) == ["u1", "u2"]


def test_one_update_in_flight_per_user_new_events_wait_in_next_window():
    book = WindowBook(max_events=1, max_age_s=0)
    book.add(pairwise("a"), None, 0)
    w1 = book.take("u1")
    book.add(pairwise("b"), None, 0)
    assert not book.is_due("u1", 10)
    with pytest.raises(RuntimeError):
        book.take("u1")
    book.complete(w1)
    assert book.take("u1").event_ids == ("b",)


def test_duplicates_pending_or_in_flight_are_refused():
    book = WindowBook(max_events=5, max_age_s=0)
    assert book.add(pairwise("a"), None, 0)
    assert not book.add(pairwise("a"), None, 0)
    w = book.take("u1")
    assert not book.add(pairwise("a"), None, 0)
    book.complete(w)
    assert book.add(pairwise("a"), None, 0)  # beyond the horizon the store dedupes


def test_give_back_puts_events_in_front_and_backs_off():
    book = WindowBook(max_events=2, max_age_s=0)
    book.add(pairwise("a"), "ha", 0)
    w = book.take("u1")
    book.add(pairwise("b"), "hb", 1)
    book.give_back(w, retry_at=10)
    assert not book.is_due("u1", 5)
    w2 = book.take("u1") if book.is_due("u1", 10) else None
    assert w2 is not None and w2.event_ids == ("a", "b") and w2.handles == ("ha", "hb")


def test_overflow_beyond_max_events_stays_pending_in_order():
    book = WindowBook(max_events=2, max_age_s=0)
    for i in range(5):
        book.add(pairwise(f"e{i}"), i, 0)
    assert book.take("u1").event_ids == ("e0", "e1")
    assert book.pending_events() == 3


def test_window_id_is_deterministic_and_order_sensitive():
    assert window_id("u", ["a", "b"]) == window_id("u", ["a", "b"])
    assert window_id("u", ["a", "b"]) != window_id("u", ["b", "a"])
    assert window_id("u", ["ab"]) != window_id("u", ["a", "b"])


def test_drop_users_forgets_pending_windows():
    book = WindowBook(max_events=5, max_age_s=100)
    book.add(pairwise("a", "u1"), None, 0)
    book.add(pairwise("b", "u2"), None, 0)
    assert book.drop_users(["u1"]) == 1
    assert list(book) == ["u2"]
    assert book.add(pairwise("a", "u1"), None, 0)


def test_duplicate_handles_are_released_only_with_the_original_event():
    book = WindowBook(max_events=5, max_age_s=0)
    book.add(pairwise("a"), "h1", 0)
    w = book.take("u1")
    assert not book.add(pairwise("a"), "h1-redelivered", 0)
    book.give_back(w)  # the update failed: nothing may be acknowledged yet
    w2 = book.take("u1")
    assert book.complete(w2) == ["h1-redelivered"]
    assert book.complete(w2) == []
