"""Unit tests of the CPU baseline judge (term overlap, not a language model)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

import streamer
from streamer.domain import baseline_judge
from streamer.domain.baseline import NEUTRAL_SUMMARY, BaselineSummarizer
from streamer.domain.baseline_judge import BASELINE_JUDGE_NAME, baseline_p_a
from streamer.domain.codec import decode_interaction
from streamer.domain.triples import NO_NEGATIVE, Triple, to_triples

pytestmark = pytest.mark.unit

SAMPLE = Path(streamer.__file__).resolve().parent / "data" / "sample_clickstream.jsonl"
MOVIES_QUERY = "Please recommend some movies to me."


@dataclass(frozen=True)
class T:
    query: str
    chosen: str
    rejected: str


def movie(title: str, genres: str) -> str:
    return f"Title: {title}, Genres: {genres}"


def news(title: str, abstract: str) -> str:
    return f"Title: {title}\nAbstract: {abstract}"


SCIFI = movie("Star Harbour (1994)", "Sci-Fi|Adventure")
ROMANCE = movie("Notting Lane (1999)", "Comedy|Romance")
POLITICS = news("Senate Passes Budget Bill", "Lawmakers vote on the budget before the election.")
CELEBRITY = news("Pop Star Tops the Charts", "Celebrities react to the awards night.")


def scifi_over_romance_summary() -> str:
    window = [
        T(MOVIES_QUERY, movie(f"Orbit {i} (1999)", "Sci-Fi"), movie(f"Kiss {i} (2001)", "Romance"))
        for i in range(4)
    ]
    return BaselineSummarizer().summarize(None, window)


def test_labelled_as_a_baseline_not_a_language_model() -> None:
    assert BASELINE_JUDGE_NAME == "baseline-judge (term overlap, not a language model)"
    assert "not a language model" in (baseline_judge.__doc__ or "").casefold()


def test_a_summary_liking_sci_fi_and_disliking_romance_prefers_sci_fi_in_both_orders() -> None:
    summary = scifi_over_romance_summary()
    assert "Watches sci-fi films; passes on romance." in summary
    p = baseline_p_a(summary, SCIFI, ROMANCE)
    assert p > 0.5
    assert baseline_p_a(summary, ROMANCE, SCIFI) < 0.5
    assert baseline_p_a(summary, SCIFI, ROMANCE) == pytest.approx(
        1.0 - baseline_p_a(summary, ROMANCE, SCIFI), abs=1e-12
    )
    assert 0.0 <= p <= 1.0


@pytest.mark.parametrize("summary", ["", "   ", "Not Provided.", NEUTRAL_SUMMARY])
def test_a_summary_saying_nothing_gives_exactly_one_half(summary: str) -> None:
    assert baseline_p_a(summary, SCIFI, ROMANCE) == 0.5
    assert baseline_p_a(summary, POLITICS, CELEBRITY) == 0.5


def test_nothing_known_about_either_item_gives_exactly_one_half() -> None:
    summary = scifi_over_romance_summary()
    assert baseline_p_a(summary, POLITICS, CELEBRITY) == 0.5
    assert baseline_p_a(summary, SCIFI, SCIFI) == 0.5


def test_news_topics_are_matched_through_the_lexicon() -> None:
    window = [
        T("Please recommend some news to me.", POLITICS, CELEBRITY),
        T("Please recommend some news to me.",
          news("Governor Signs Housing Reform", "The legislature debated for weeks."),
          news("Actress Wins Award", "The showbiz world reacts.")),
    ]
    summary = BaselineSummarizer().summarize(None, window)
    assert "Reads politics news; skips entertainment." in summary
    fresh_politics = news("Parliament Calls Snap Election", "Voters head to the ballot box.")
    fresh_gossip = news("Pop Singer Announces Tour", "Celebrity fans flood social media.")
    assert baseline_p_a(summary, fresh_politics, fresh_gossip) > 0.8


def test_a_category_liked_in_another_domain_counts_a_little() -> None:
    book_summary = BaselineSummarizer().summarize(None, [
        T("Please recommend some books to me.",
          "Title: The Void Drift\nDescription: A science fiction novel about an alien signal.",
          "Title: The Lavender Kiss\nDescription: A heartwarming romance in a coastal town."),
    ])
    assert "Reads sci-fi books; skips romance." in book_summary
    cross = baseline_p_a(book_summary, SCIFI, ROMANCE)
    same = baseline_p_a(scifi_over_romance_summary(), SCIFI, ROMANCE)
    assert 0.5 < cross < same


@pytest.mark.parametrize(
    "prose",
    [
        "The user loves science fiction and space adventures but dislikes romantic comedies.",
        "Enjoys sci-fi. Avoids romance.",
        "<think>\nreasoning about romance\n</think>\n\nA sci-fi fan who skips romance films.",
    ],
)
def test_free_prose_degrades_to_word_overlap_with_negations(prose: str) -> None:
    assert baseline_p_a(prose, SCIFI, ROMANCE) > 0.5
    assert baseline_p_a(prose, ROMANCE, SCIFI) < 0.5


def test_free_prose_topics_match_news_items() -> None:
    prose = "Reads politics and science news; skips celebrity gossip."
    assert baseline_p_a(prose, POLITICS, CELEBRITY) > 0.5
    assert baseline_p_a(prose, SCIFI, ROMANCE) == 0.5


def test_deterministic_and_bounded_on_odd_inputs() -> None:
    odd = ["\x00\x1b[31m控制字符\u200b" * 30, "word " * 3000, "No negative sample.", ""]
    for summary in odd + [scifi_over_romance_summary()]:
        for a in odd + [SCIFI]:
            for b in odd + [ROMANCE]:
                p = baseline_p_a(summary, a, b)
                assert 0.0 <= p <= 1.0
                assert p == baseline_p_a(summary, a, b)
                assert p == pytest.approx(1.0 - baseline_p_a(summary, b, a), abs=1e-12)


# ------------------------------------------------------------------ the bundled clickstream


def sample_triples_by_user() -> dict[str, list[Triple]]:
    events = defaultdict(list)
    for line in SAMPLE.read_bytes().splitlines():
        if line.strip():
            event = decode_interaction(None, line)
            events[event.user_id].append(event)
    return {user: list(to_triples(evs).triples) for user, evs in sorted(events.items())}


def held_out_accuracy(window: int | None) -> tuple[float, int]:
    """Summarize each user's first half of triples (one call, or windows of ``window``), then
    judge the second half's pairs: the fraction with P(chosen) > 0.5."""
    summarizer = BaselineSummarizer()
    correct = total = 0
    for triples in sample_triples_by_user().values():
        half = len(triples) // 2
        first, second = triples[:half], triples[half:]
        summary: str | None = None
        step = window or max(half, 1)
        for start in range(0, half, step):
            summary = summarizer.summarize(summary, first[start : start + step])
        for t in second:
            if t.rejected == NO_NEGATIVE:
                continue
            total += 1
            correct += baseline_p_a(summary or "", t.chosen, t.rejected) > 0.5
            assert baseline_p_a("", t.chosen, t.rejected) == 0.5  # the no-summary baseline
    return correct / total, total


@pytest.mark.parametrize("window", [None, 4, 2])
def test_summaries_of_the_first_half_predict_the_second_half_of_the_sample(window) -> None:
    accuracy, pairs = held_out_accuracy(window)
    assert pairs > 200
    # the no-summary baseline scores 0.5 on every pair, i.e. 0 pairs with p_correct > 0.5;
    # measured: 0.75 (one window), 0.74 (windows of 4 or 2), on 308 pairs
    assert accuracy > 0.65, accuracy
