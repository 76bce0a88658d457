"""Unit tests of the deterministic baseline summarizer (not the AlignXplore+ model)."""

from __future__ import annotations

import re
from collections import namedtuple
from dataclasses import dataclass

import pytest

from streamer.domain import baseline
from streamer.domain.baseline import (
    BASELINE_HEADER,
    BASELINE_MODEL_NAME,
    MAX_SUMMARY_CHARS,
    NEUTRAL_SUMMARY,
    BaselineSummarizer,
    parse_weights,
)

pytestmark = pytest.mark.unit

MOVIES_QUERY = "Please recommend some movies to me."
NEWS_QUERY = "Please recommend some news to me."


@dataclass(frozen=True)
class T:
    """A minimal triple: any object with query/chosen/rejected strings will do."""

    query: str
    chosen: str
    rejected: str


def movie(title: str, genres: str) -> str:
    return f"Title: {title}, Genres: {genres}"


def news(title: str, abstract: str) -> str:
    return f"Title: {title}\nAbstract: {abstract}"


def scifi_window(start: int, size: int = 5) -> list[T]:
    return [
        T(
            MOVIES_QUERY,
            movie(f"Orbit {i} (1999)", "Sci-Fi"),
            movie(f"Meadow {i} (2001)", "Western"),
        )
        for i in range(start, start + size)
    ]


def romance_window(start: int, size: int = 5) -> list[T]:
    return [
        T(
            MOVIES_QUERY,
            movie(f"Harbor {i} (2004)", "Romance"),
            movie(f"Meadow {i} (2001)", "Western"),
        )
        for i in range(start, start + size)
    ]


def top_interest(summary: str) -> str:
    weights = parse_weights(summary)
    return min((-w, label) for label, w in weights.items() if w > 0)[1]


def test_labelled_as_baseline_everywhere() -> None:
    assert BASELINE_MODEL_NAME == "prefstream-baseline-v1"
    assert BaselineSummarizer.name == BASELINE_MODEL_NAME
    assert "not the alignxplore+ model" in (baseline.__doc__ or "").casefold()
    summary = BaselineSummarizer().summarize(None, scifi_window(0, 1))
    assert summary.startswith(BASELINE_HEADER)
    assert "not a language model" in summary


def test_same_input_gives_same_output_across_instances() -> None:
    window = scifi_window(0) + romance_window(10, 2)
    first = BaselineSummarizer().summarize("Likes long films.", window)
    second = BaselineSummarizer().summarize("Likes long films.", window)
    assert first == second


def test_chosen_genres_become_interests_and_rejected_genres_are_passed_over() -> None:
    summary = BaselineSummarizer().summarize(None, scifi_window(0, 3))
    assert re.search(r"Gravitates to: sci-fi \(\d+\.\d\)", summary)
    assert "Tends to pass over: western (" in summary
    assert "Mostly engages with movies (" in summary
    assert "Built from 3 interactions so far." in summary
    weights = parse_weights(summary)
    assert weights["sci-fi"] > 0 > weights["western"]


def test_news_title_and_abstract_words_count_without_stop_words() -> None:
    window = [
        T(
            NEWS_QUERY,
            news("NASA launches Mars rover", "The rover will look for ancient life."),
            news("Pop star tour outfit", "Fans react online to the look."),
        )
    ]
    summary = BaselineSummarizer().summarize(None, window)
    weights = parse_weights(summary)
    assert weights["rover"] > weights["ancient"] > 0  # title words outweigh abstract words
    assert weights["outfit"] < 0
    assert "the" not in weights and "will" not in weights
    assert "Mostly engages with news (" in summary


def test_summary_weights_round_trip_through_the_text() -> None:
    summarizer = BaselineSummarizer()
    first = summarizer.summarize(None, scifi_window(0, 4))
    weights = parse_weights(first)
    assert weights
    shown = re.search(r"Gravitates to: sci-fi \((\d+\.\d)\)", first)
    assert shown is not None and weights["sci-fi"] == float(shown.group(1))
    second = summarizer.summarize(first, scifi_window(4, 4))
    assert parse_weights(second)["sci-fi"] > weights["sci-fi"]
    assert "Built from 8 interactions so far." in second


def test_drifting_tastes_change_the_top_interest_within_a_few_windows() -> None:
    summarizer = BaselineSummarizer()
    summary: str | None = None
    for w in range(3):
        summary = summarizer.summarize(summary, scifi_window(w * 5))
    assert summary is not None
    assert top_interest(summary) == "sci-fi"
    history = []
    for w in range(3):
        summary = summarizer.summarize(summary, romance_window(100 + w * 5))
        history.append(top_interest(summary))
    assert history[-1] == "romance"
    assert summary.index("romance (") < summary.index("sci-fi (")
    assert "romance" in history[:2]  # the switch happens within the first two new windows


def test_reversed_evidence_moves_a_term_from_interests_to_avoided() -> None:
    summarizer = BaselineSummarizer()
    liked = [T(MOVIES_QUERY, movie("A (1990)", "Horror"), movie("B (1990)", "Musical"))] * 4
    disliked = [T(MOVIES_QUERY, movie("C (1990)", "Musical"), movie("D (1990)", "Horror"))] * 8
    summary = summarizer.summarize(None, liked)
    assert parse_weights(summary)["horror"] > 0
    summary = summarizer.summarize(summary, disliked)
    assert parse_weights(summary)["horror"] < 0
    assert "Tends to pass over: horror (" in summary


def test_foreign_prose_previous_summary_is_carried_as_an_excerpt() -> None:
    prose = (
        'The user enjoys "hard" science fiction (4.5 stars on average) and dislikes rom-coms.\n'
        "Gravitates to: nothing. They read long-form journalism; avoid celebrity gossip."
    )
    summary = BaselineSummarizer().summarize(prose, scifi_window(0, 2))
    assert summary.startswith(BASELINE_HEADER)
    assert 'Earlier notes from another writer: "The user enjoys' in summary
    assert len(summary) <= MAX_SUMMARY_CHARS
    weights = parse_weights(summary)
    assert weights["sci-fi"] > 0
    assert "nothing" not in weights and "science fiction" not in weights


def test_foreign_excerpt_is_dropped_once_enough_interactions_were_seen() -> None:
    summarizer = BaselineSummarizer()
    summary = summarizer.summarize("Prefers documentaries about oceans.", scifi_window(0, 5))
    assert "Earlier notes" in summary
    for w in range(1, 6):
        summary = summarizer.summarize(summary, scifi_window(w * 5, 5))
    assert "Earlier notes" not in summary


def test_reply_with_think_block_as_previous_summary_keeps_only_the_tail() -> None:
    previous = "<think>\nlots of reasoning\n</think>\n\nLikes jazz and quiet evenings."
    summary = BaselineSummarizer().summarize(previous, scifi_window(0, 1))
    assert '"Likes jazz and quiet evenings."' in summary
    assert "reasoning" not in summary


@pytest.mark.parametrize(
    "previous",
    [
        "",
        "   ",
        "Not Provided.",
        "(((( 1.0 )))) ,,,, ....",
        BASELINE_HEADER + " Gravitates to: sci-fi (abc), (1.0), , space (2.5",
        BASELINE_HEADER + " Gravitates to: x (1e309). Built from many interactions so far.",
        "\x00\x1b[31m控制字符\u200b\ud7ff" * 50,
        "word " * 5000,
    ],
)
def test_odd_previous_summaries_never_crash(previous: str) -> None:
    summary = BaselineSummarizer().summarize(previous, scifi_window(0, 2))
    assert summary.startswith(BASELINE_HEADER)
    assert len(summary) <= MAX_SUMMARY_CHARS
    assert "\x00" not in summary and "\x1b" not in summary


def test_empty_window_returns_previous_summary_unchanged() -> None:
    summarizer = BaselineSummarizer()
    previous = "Any text at all, even  with odd   spacing.\n"
    assert summarizer.summarize(previous, []) is previous
    assert summarizer.summarize(None, []) == NEUTRAL_SUMMARY
    assert summarizer.summarize("Not Provided.", ()) == NEUTRAL_SUMMARY


def test_unicode_items_are_handled() -> None:
    window = [
        T(
            "Recommande-moi un film, s'il te plaît 🎬",
            movie("Amélie à Montmartre (2001)", "Comédie|Romance"),
            movie("東京タワー物語 (2005)", "Drama"),
        ),
        T(
            "Please recommend some books to me.",
            "Title: Café Noir\nDescription: ['Ein Krimi über Kaffee ☕']",
            "No negative sample.",
        ),
    ]
    summary = BaselineSummarizer().summarize("Mag französische Filme 🇫🇷.", window)
    assert summary.encode("utf-8").decode("utf-8") == summary
    weights = parse_weights(summary)
    assert weights["comédie"] > 0
    assert weights["東京タワー物語"] < 0
    assert len(summary) <= MAX_SUMMARY_CHARS


def test_missing_negative_adds_no_avoided_terms() -> None:
    window = [
        T(NEWS_QUERY, news("Solar power record", "Panels hit new highs."), "No negative sample.")
    ]
    weights = parse_weights(BaselineSummarizer().summarize(None, window))
    assert all(w > 0 for w in weights.values())
    assert "sample" not in weights and "negative" not in weights


def test_free_text_items_and_other_triple_types_are_accepted() -> None:
    Pair = namedtuple("Pair", "query chosen rejected")
    window = [
        Pair(
            "I'm 40 and want to start running. Where do I begin?",
            "Start with gentle walk-run intervals three times a week.",
            "Just sign up for a marathon; pressure works.",
        ),
        {"query": "Explain vaccines.", "chosen": "A friendly analogy.", "rejected": "Jargon."},
    ]
    summary = BaselineSummarizer().summarize(None, window)
    assert "Mostly engages with general requests (" in summary
    assert parse_weights(summary)["intervals"] > 0


def test_length_is_bounded_even_with_long_labels_and_many_windows() -> None:
    summarizer = BaselineSummarizer()
    summary: str | None = "x" * 2000
    for w in range(6):
        window = [
            T(
                MOVIES_QUERY,
                movie(
                    f"Supercalifragilistic{w}{i} Extraordinarily{i}",
                    "|".join(f"Genreveryverylongname{w}{i}{k}" for k in range(6)),
                ),
                movie(
                    f"Antidisestablishment{w}{i}",
                    "|".join(f"Otherlonggenre{w}{i}{k}" for k in range(6)),
                ),
            )
            for i in range(10)
        ]
        summary = summarizer.summarize(summary, window)
        assert len(summary) <= MAX_SUMMARY_CHARS
        assert summary.startswith(BASELINE_HEADER)
        assert summary.endswith((".", '"'))
