import pytest

from schemas import Item
from streamer.domain.triples import NO_NEGATIVE, render_item, to_triples
from tests.factories import click, feedback, impression, pairwise, rating

pytestmark = pytest.mark.unit


def test_items_render_per_domain_like_the_training_data():
    it = Item(id="1", title="T", abstract="A", description="D", genres=("Drama", "Romance"))
    assert render_item(it, "news") == "Title: T\nAbstract: A"
    assert render_item(it, "books") == "Title: T\nDescription: D"
    assert render_item(it, "movies") == "Title: T, Genres: Drama|Romance"
    assert render_item(Item(id="x", text="Answer text"), "chat") == "Answer text"
    assert render_item(Item(id="x", title="T", abstract="A"), "podcasts") == "Title: T\nAbstract: A"


def test_pairwise_maps_one_to_one_with_default_query():
    conv = to_triples([pairwise("e1")])
    (tr,) = conv.triples
    assert tr.query == "Please recommend some news to me."
    assert tr.chosen.startswith("Title: Item c-e1") and tr.rejected.startswith("Title: Item r-e1")


def test_pairwise_with_query_and_no_negative():
    conv = to_triples([pairwise("e1", query="Pick one", rejected=None)])
    assert conv.triples[0].query == "Pick one" and conv.triples[0].rejected == NO_NEGATIVE


def test_impression_pairs_each_click_with_a_skipped_item_of_same_impression():
    conv = to_triples([impression("i", clicked=3, skipped=2)])
    assert [t.rejected.split("\n")[0] for t in conv.triples] == [
        "Title: Item i-s0", "Title: Item i-s1", "Title: Item i-s0"]
    assert to_triples([impression("j", 1, 0)]).triples[0].rejected == NO_NEGATIVE


def test_ratings_split_by_threshold_and_pair_in_order():
    events = [rating("a", 5), rating("b", 1), rating("c", 4), rating("d", 2), rating("e", 4.5)]
    conv = to_triples(events, rating_threshold=0.7)
    assert [t.event_id for t in conv.triples] == ["a", "c", "e"]
    assert "m-b" in conv.triples[0].rejected and "m-d" in conv.triples[1].rejected
    assert conv.triples[2].rejected == NO_NEGATIVE
    assert conv.unpaired_event_ids == ()


def test_leftover_negatives_are_reported_not_silently_lost():
    conv = to_triples([feedback("x", "dislike"), feedback("y", "dislike"), feedback("z", "like")])
    assert len(conv.triples) == 1 and conv.unpaired_event_ids == ("y",)


def test_click_is_positive_only_and_pairing_is_deterministic():
    events = [click("c1"), rating("r1", 5), pairwise("p1"), rating("r2", 0)]
    assert to_triples(events) == to_triples(list(events))
    assert to_triples([click("c1")]).triples[0].rejected == NO_NEGATIVE
