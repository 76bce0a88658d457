"""The public-dataset importers on small files in exactly the published formats (headerless
TSVs for MIND, CSV headers for MovieLens, JSONL for Amazon Reviews 2023), following the paper's
conventions: item renderings, positives and their random negatives, timestamp order."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas import Impression, PairwiseChoice
from streamer.domain import importers
from streamer.domain.triples import render_item, to_triples
from streamer.errors import ConfigurationError

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[2] / "fixtures" / "datasets"


def lines(*parts: str) -> list[str]:
    return (DATA.joinpath(*parts)).read_text(encoding="utf-8").splitlines(keepends=True)


def test_mind_history_once_then_impressions_in_time_order():
    result = importers.mind(lines("mind", "behaviors.tsv"), lines("mind", "news.tsv"))
    assert (result.users, result.items, result.skipped) == (2, 5, 0)
    ids = [e.event_id for e in result.events]
    assert ids == ["mind-U100-h0", "mind-U100-h1", "mind-imp-1", "mind-imp-2", "mind-imp-3"]
    h0 = result.events[0]
    assert isinstance(h0, PairwiseChoice) and h0.occurred_at == datetime(2019, 11, 11, 9, 5, 58,
                                                                         tzinfo=UTC)
    assert h0.rejected.id not in {"N1001", "N1005", "N1003"}  # a never-clicked article
    assert render_item(h0.chosen, "news") == ("Title: Council approves new stadium lanes\n"
                                              "Abstract: The plan adds protected bike lanes "
                                              "around the stadium.")
    imp = result.events[2]
    assert isinstance(imp, Impression)
    assert [i.id for i in imp.clicked] == ["N1003"] and [i.id for i in imp.skipped] == [
        "N1002", "N1004"]
    assert result.events[3].occurred_at == datetime(2019, 11, 12, 13, 30, 7, tzinfo=UTC)  # 1:30 PM
    triples = to_triples([imp]).triples
    assert triples and triples[0].query == "Please recommend some news to me."


def test_movielens_every_rating_is_a_positive_against_an_unrated_movie():
    result = importers.movielens(lines("movielens", "ratings.csv"),
                                 lines("movielens", "movies.csv"))
    assert (len(result.events), result.users) == (5, 2)
    assert [e.occurred_at for e in result.events] == sorted(e.occurred_at for e in result.events)
    by_user = {}
    for e in result.events:
        by_user.setdefault(e.user_id, []).append(e)
    rated_1 = {"260", "32", "1"}
    assert all(e.rejected.id not in rated_1 for e in by_user["1"])
    low = next(e for e in by_user["1"] if e.chosen.id == "1")  # rated 1.0: still a positive
    assert render_item(low.chosen, "movies") == (
        "Title: Toy Story (1995), Genres: Adventure|Animation|Children|Comedy|Fantasy")
    quoted = next(e for e in by_user["2"] if e.chosen.id == "11")  # a CSV-quoted title
    assert quoted.chosen.title == "American President, The (1995)"
    none = next(e for e in by_user["2"] if e.chosen.id == "1000")
    assert none.chosen.genres == ()  # "(no genres listed)"


def test_amazon_reviews_join_meta_on_parent_asin():
    result = importers.amazon(lines("amazon", "Books.jsonl"), lines("amazon", "meta_Books.jsonl"))
    assert (len(result.events), result.users, result.items) == (3, 2, 4)
    first = result.events[0]
    assert first.chosen.id == "B0001" and first.domain == "books"
    assert render_item(first.chosen, "books") == (
        "Title: The Quiet Orchard\nDescription: ['A slow-burn village mystery about an orchard.']")
    second = result.events[1]
    assert second.chosen.id == "B0002"  # asin B0002X, parent B0002
    assert second.rejected.id not in {"B0001", "B0002"}


def test_negatives_are_reproducible_and_seeded():
    args = (lines("movielens", "ratings.csv"), lines("movielens", "movies.csv"))
    a = importers.movielens(*args, seed=1)
    assert a == importers.movielens(lines("movielens", "ratings.csv"),
                                    lines("movielens", "movies.csv"), seed=1)


def test_bad_input_names_the_file_and_line():
    with pytest.raises(ConfigurationError, match="behaviors.tsv line 1: time"):
        importers.mind(["1\tU1\t2019-11-11 09:05\t\tN1-1\n"], ["N1\ta\tb\tt\tab\tu\t[]\t[]\n"])
    with pytest.raises(ConfigurationError, match="movies.csv: expected the header"):
        importers.movielens(["userId,movieId,rating,timestamp\n"], ["id,name\n"])
    with pytest.raises(ConfigurationError, match="review JSONL line 1"):
        importers.amazon(["{}\n"], [])
