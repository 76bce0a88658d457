import pytest

from streamer.domain.windowing import window_id

pytestmark = pytest.mark.unit


def test_window_id_is_deterministic_and_order_sensitive():
    assert window_id("u", ["a", "b"]) == window_id("u", ["a", "b"])
    assert window_id("u", ["a", "b"]) != window_id("u", ["b", "a"])
    assert window_id("u", ["ab"]) != window_id("u", ["a", "b"])
