"""Pure helpers of the routing benchmark (bench/routing.py): no servers, nothing timed."""

from __future__ import annotations

import pytest

from bench.routing import (
    chance_same,
    latency_stats,
    make_requests,
    ratio,
    same_as_first_fraction,
    split_fractions,
)

pytestmark = pytest.mark.unit


def test_latency_stats_interpolates_percentiles():
    s = latency_stats([float(x) for x in range(1, 101)])  # 1..100
    assert s["p50_s"] == pytest.approx(50.5)
    assert s["p95_s"] == pytest.approx(95.05)
    assert s["p99_s"] == pytest.approx(99.01)
    assert s["mean_s"] == pytest.approx(50.5)
    assert s["max_s"] == 100.0


def test_latency_stats_of_nothing_is_none():
    assert set(latency_stats([]).values()) == {None}


def test_ratio_guards_missing_and_zero():
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(1.0, 0.0) is None
    assert ratio(1.0, None) is None


def test_split_fractions_and_chance():
    f = split_fractions({"fast": 3, "slow": 1})
    assert f == {"fast": 0.75, "slow": 0.25}
    assert chance_same(f.values()) == pytest.approx(0.625)
    assert chance_same(split_fractions({"a": 1, "b": 1, "c": 1}).values()) == pytest.approx(1 / 3)
    assert split_fractions({"a": 0}) == {}


def test_same_as_first_fraction_counts_later_requests_only():
    order = [("u1", "a"), ("u2", "b"), ("u1", "a"), ("u2", "a"), ("u1", "b"), ("u2", "b")]
    # u1: a, then a (same), b (not); u2: b, then a (not), b (same) -> 2 of 4
    assert same_as_first_fraction(order) == 0.5
    assert same_as_first_fraction([("u", "a"), ("u", "a")]) == 1.0
    assert same_as_first_fraction([("u", "a"), ("v", "b")]) is None


def test_make_requests_is_seeded_and_cycles_users():
    a = make_requests(10, users=4, seed=3)
    b = make_requests(10, users=4, seed=3)
    assert [r.prompt.messages() for r in a] == [r.prompt.messages() for r in b]
    assert [r.user_id for r in a][:5] == ["user-0000", "user-0001", "user-0002", "user-0003",
                                         "user-0000"]
    assert make_requests(10, users=4, seed=4)[0].prompt.messages() != a[0].prompt.messages()
    assert all(1 <= len(r.triples) <= 4 for r in a)
