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
    item_features,
    parse_weights,
    recover_state,
    render_summary,
)

pytestmark = pytest.mark.unit

MOVIES_QUERY = "Please recommend some movies to me."
NEWS_QUERY = "Please recommend some news to me."
BOOKS_QUERY = "Please recommend some books to me."


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


def book(title: str, description: str) -> str:
    return f"Title: {title}\nDescription: {description}"


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


POLITICS = news("Senate Passes Budget Bill", "Lawmakers vote on the budget before the election.")
SCIENCE = news("Mars Rover Finds Ancient Riverbed", "Scientists say the discovery is a first.")
CELEBRITY = news("Pop Star Tops the Charts", "Celebrities react to the awards night.")
SPORTS = news("Rugby Squad Wins Championship", "The league standings shift after the match.")


def top_interest(summary: str) -> str:
    weights = parse_weights(summary)
    return min((-w, label) for label, w in weights.items() if w > 0)[1]


def prose_of(summary: str) -> str:
    """The summary without its header and its interaction count."""
    body = summary.removeprefix(BASELINE_HEADER)
    return re.sub(r"Built from \d+ interactions? so far\.", "", body)


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
    assert "Watches sci-fi films; passes on western." in summary
    assert "Built from 3 interactions so far." in summary
    weights = parse_weights(summary)
    assert weights["sci-fi"] > 0 > weights["western"]


def test_the_profile_is_prose_without_numbers() -> None:
    window = scifi_window(0, 3) + [T(NEWS_QUERY, POLITICS, CELEBRITY), T(NEWS_QUERY, SCIENCE, SPORTS)]
    summary = BaselineSummarizer().summarize(None, window)
    assert not re.search(r"\d", prose_of(summary))
    assert "(" not in prose_of(summary)
    assert "Watches sci-fi films; passes on western." in summary
    assert "Reads politics and science news; skips entertainment and sports." in summary


def test_news_topics_come_from_the_title_and_abstract_and_words_from_the_title() -> None:
    features = item_features(news("NASA launches Mars rover", "The rover will look for ancient life."))
    assert features.domain == "news" and features.categories == ("science",)
    assert features.words["rover"] > features.words["ancient"] > 0  # title words outweigh abstract
    assert "the" not in features.words and "will" not in features.words
    window = [T(NEWS_QUERY, SCIENCE, CELEBRITY)] * 2
    summary = BaselineSummarizer().summarize(None, window)
    assert "Reads science news; skips entertainment." in summary
    weights = parse_weights(summary)
    assert weights["science"] > 0 > weights["entertainment"]
    assert weights["mars"] > 0 > weights["charts"]


def test_book_genres_come_from_the_description() -> None:
    fantasy = book("The Silver Wyvern", "A fantasy adventure in which a sorcerer reclaims a kingdom.")
    poems = book("Lantern Hymns", "Poems exploring love and loss, in lyrical sonnets.")
    mystery = book("The Vanishing Alibi", "A twisty whodunit in which a sleuth solves a murder.")
    assert item_features(fantasy).categories == ("fantasy",)
    assert item_features(poems).categories == ("poetry",)
    summary = BaselineSummarizer().summarize(
        None, [T(BOOKS_QUERY, fantasy, poems), T(BOOKS_QUERY, mystery, poems)]
    )
    assert re.search(r"Reads (fantasy and mystery|mystery and fantasy) books; skips poetry\.", summary)


def test_first_listed_is_strongest_and_the_state_round_trips_through_the_text() -> None:
    summarizer = BaselineSummarizer()
    window = scifi_window(0, 4) + [
        T(MOVIES_QUERY, movie("Steel Ambush (2011)", "Action"), movie("Hollow Lake (1985)", "Horror"))
    ]
    first = summarizer.summarize(None, window)
    assert "Watches sci-fi and action films; passes on western and horror." in first
    weights = parse_weights(first)
    assert weights["sci-fi"] > weights["action"] > 0 > weights["horror"] > weights["western"]
    # re-rendering the recovered state writes the same profile
    assert render_summary(recover_state(first)) == first
    # more action than sci-fi: action moves to the front
    more_action = [
        T(MOVIES_QUERY, movie(f"Rogue Pursuit {i} (2007)", "Action"), movie(f"Dry {i} (1990)", "Western"))
        for i in range(6)
    ]
    second = summarizer.summarize(first, more_action)
    assert "Watches action and sci-fi films" in second
    assert parse_weights(second)["action"] > parse_weights(second)["sci-fi"]
    assert "Built from 11 interactions so far." in second


def test_drifting_tastes_change_the_summary_within_a_few_windows() -> None:
    summarizer = BaselineSummarizer()
    summary: str | None = None
    for w in range(3):
        summary = summarizer.summarize(summary, scifi_window(w * 5))
    assert summary is not None
    assert top_interest(summary) == "sci-fi"
    history = []
    for w in range(4):
        summary = summarizer.summarize(summary, romance_window(100 + w * 5))
        history.append(summary)
    assert "Lately more into romance films." in history[0]  # the rising term shows up first
    assert "Watches romance and sci-fi films" in history[1]  # ... then leads the list
    assert top_interest(history[1]) == "romance"
    assert "Lately less into sci-fi films." in history[2]  # the old one fades ...
    assert "Watches romance films; passes on western." in history[2]
    assert "No longer into sci-fi films." in history[3]  # ... and is dropped
    assert "sci-fi" not in parse_weights(history[3])
    later = summarizer.summarize(history[3], romance_window(200))
    assert "sci-fi" not in later


def test_a_weak_interest_fades_when_its_domain_gives_it_no_support() -> None:
    summarizer = BaselineSummarizer()
    weak = [T(MOVIES_QUERY, movie("Laugh (1990)", "Comedy"), "No negative sample.")]
    summary = summarizer.summarize(None, scifi_window(0, 3) + weak)
    assert "Watches sci-fi and comedy films" in summary
    for w in range(1, 5):
        summary = summarizer.summarize(summary, scifi_window(w * 3, 3))
    assert "comedy" not in parse_weights(summary)
    assert "Watches sci-fi films" in summary


def test_no_trend_is_reported_for_a_domain_the_window_did_not_touch() -> None:
    summarizer = BaselineSummarizer()
    summary = summarizer.summarize(None, scifi_window(0, 3))
    for _ in range(4):
        summary = summarizer.summarize(summary, [T(NEWS_QUERY, SCIENCE, CELEBRITY)])
    assert "Watches sci-fi films" in summary
    assert "Lately" not in summary and "longer" not in summary


def test_reversed_evidence_moves_a_term_from_interests_to_avoided() -> None:
    summarizer = BaselineSummarizer()
    liked = [T(MOVIES_QUERY, movie("A (1990)", "Horror"), movie("B (1990)", "Musical"))] * 4
    disliked = [T(MOVIES_QUERY, movie("C (1990)", "Musical"), movie("D (1990)", "Horror"))] * 8
    summary = summarizer.summarize(None, liked)
    assert parse_weights(summary)["horror"] > 0
    assert "Watches horror films; passes on musical." in summary
    summary = summarizer.summarize(summary, disliked)
    assert parse_weights(summary)["horror"] < 0
    assert "Passes on horror films. Lately more into musical films." in summary


def test_foreign_prose_previous_summary_is_carried_as_an_excerpt() -> None:
    prose = (
        'The user enjoys "hard" science fiction (4.5 stars on average) and dislikes rom-coms.\n'
        "Watches nothing films. They read long-form journalism; avoid celebrity gossip."
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


def test_summaries_of_the_earlier_numeric_baseline_are_still_read() -> None:
    legacy = (
        f"{BASELINE_HEADER} Gravitates to: sci-fi (4.2), orbit (1.0). Tends to pass over: "
        "western (2.0). Mostly engages with movies (3.0). Built from 3 interactions so far."
    )
    state = recover_state(legacy)
    assert state.interactions == 3
    assert state.words["sci-fi"] > 0 > state.words["western"]
    summary = BaselineSummarizer().summarize(legacy, scifi_window(0, 1))
    assert "Built from 4 interactions so far." in summary
    assert "Gravitates" not in summary


@pytest.mark.parametrize(
    "previous",
    [
        "",
        "   ",
        "Not Provided.",
        "(((( 1.0 )))) ,,,, ....",
        BASELINE_HEADER + " Gravitates to: sci-fi (abc), (1.0), , space (2.5",
        BASELINE_HEADER + " Gravitates to: x (1e309). Built from many interactions so far.",
        BASELINE_HEADER + " Watches , and  films; passes on . Sometimes reads news, sometimes ;",
        BASELINE_HEADER + " Lately more into and and films; less into; no longer into news.",
        BASELINE_HEADER + " Picks often mention ; passed-over items often mention , and .",
        BASELINE_HEADER + " Built from " + "9" * 5000 + " interactions so far.",
        BASELINE_HEADER + " Watches " + "films " * 3000 + "films.",
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
    assert weights["comédie"] > 0 > weights["drama"]
    assert weights["café"] > 0
    assert item_features(movie("東京タワー物語 (2005)", "Drama")).words["東京タワー物語"] > 0
    assert len(summary) <= MAX_SUMMARY_CHARS


def test_genre_labels_with_and_survive_the_round_trip() -> None:
    window = [T(MOVIES_QUERY, movie("X (1990)", "Action and Adventure"), movie("Y (1990)", "Drama"))]
    summary = BaselineSummarizer().summarize(None, window)
    assert "Watches action & adventure films; passes on drama." in summary
    assert set(recover_state(summary).categories) == {
        ("movies", "action & adventure"),
        ("movies", "drama"),
    }


def test_missing_negative_adds_no_avoided_terms() -> None:
    window = [
        T(NEWS_QUERY, news("Solar power record", "Panels hit new highs."), "No negative sample.")
    ]
    summary = BaselineSummarizer().summarize(None, window)
    weights = parse_weights(summary)
    assert weights and all(w > 0 for w in weights.values())
    assert "sample" not in weights and "negative" not in weights
    assert "skips" not in summary and "passed-over" not in summary


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
    assert "Picks often mention " in summary and "passed-over items often mention " in summary
    weights = parse_weights(summary)
    chosen_words = {"start", "gentle", "walk-run", "intervals", "three", "friendly", "analogy"}
    rejected_words = {"sign", "marathon", "pressure", "works", "jargon"}
    assert {w for w, v in weights.items() if v > 0} <= chosen_words
    assert {w for w, v in weights.items() if v < 0} <= rejected_words
    assert any(v > 0 for v in weights.values()) and any(v < 0 for v in weights.values())


def test_product_catalogue_categories_get_their_own_sentence() -> None:
    def product(title: str, categories: str) -> str:
        return f"Title: {title}\nDescription: A sturdy pick.\nGenres: {categories}"

    window = [
        T("Please recommend some items to me.", product("Cast Iron Pan", "Kitchen"),
          product("Plastic Toy Car", "Toys"))
    ] * 2
    summary = BaselineSummarizer().summarize(None, window)
    assert "Likes kitchen items; passes on toys." in summary


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


def test_length_is_bounded_with_every_domain_and_trends() -> None:
    summarizer = BaselineSummarizer()
    summary: str | None = "An earlier summary by a real model. " * 10
    for w in range(5):
        window = [
            T(MOVIES_QUERY, movie(f"A{w}{i} (1990)", f"Genre{w}{i}a|Genre{w}{i}b"),
              movie(f"B{w}{i} (1990)", f"Other{w}{i}"))
            for i in range(4)
        ] + [T(NEWS_QUERY, POLITICS, CELEBRITY), T(NEWS_QUERY, SCIENCE, SPORTS)]
        summary = summarizer.summarize(summary, window)
        assert len(summary) <= MAX_SUMMARY_CHARS
        assert summary.endswith((".", '"'))
