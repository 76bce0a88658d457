"""A deterministic CPU *baseline* preference summarizer (NOT the AlignXplore+ model).

This module is a baseline: pure Python term statistics, no language model, no I/O and no
third-party imports. It exists so that tests, benchmarks, the demo and the model stand-in can
produce readable preference profiles without a GPU. Everything it writes is labelled as a
baseline (see :data:`BASELINE_MODEL_NAME` and :data:`BASELINE_HEADER`).

Method
------
1. Each item text is parsed in the AlignXplore+ per-domain formats (``Title: ..., Genres: a|b``
   for movies, ``Title:``/``Abstract:`` for news, ``Title:``/``Description:`` for books, a
   ``Genres:`` line for other catalogues such as products, anything else as free text). Its
   *categories* are the strong features: movie genres (and product categories) as given; for
   news and books, whose texts carry no category field, the single best topic / genre found by
   a small keyword lexicon (:data:`TOPIC_LEXICON`, e.g. ``legislature``/``ballot`` ->
   politics news, ``sleuth``/``whodunit`` -> mystery books). Title words are weak features,
   abstract and description words weaker still (capped per item); stop words are removed.
2. Every triple adds the chosen item's features and subtracts the rejected item's.
3. Weights recovered from the previous summary age by half every
   :data:`HALF_LIFE_INTERACTIONS` interactions of the new window before the window's evidence
   is added; a weak term that a window about its domain did not support fades faster
   (:data:`STALE_FACTOR`). A user whose tastes drift changes summary within a few windows.
4. The state is written back as plain sentences with no numbers, one per domain, strongest
   domain first, then the trend and a few salient words, e.g.::

       Watches sci-fi and action films, sometimes comedy; passes on horror and romance.
       Reads politics and science news; skips entertainment. Lately more into documentary
       films; less into action films. Picks often mention reforestation and hiking.
       Built from 18 interactions so far.

   The summary is the only state carried between windows. The next call recovers approximate
   weights (:func:`recover_state`) from the *kind* of list a term is in (liked, "sometimes",
   passed over, "lately more into", "less into") and its *rank* there: first-listed is the
   strongest. A term that rises into the liked list in a window about its domain is written
   "Lately more into"; one that sinks to "sometimes" is "less into", one that drops out of
   the profile "no longer into" (and is forgotten).

A previous summary written by someone else (for example free prose from the real model) cannot
be parsed into weights: a short excerpt of it is carried along for a while, then dropped.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

__all__ = [
    "BASELINE_HEADER",
    "BASELINE_MODEL_NAME",
    "DOMAINS",
    "MAX_SUMMARY_CHARS",
    "NEUTRAL_SUMMARY",
    "TOPIC_LEXICON",
    "BaselineSummarizer",
    "ItemFeatures",
    "ProfileState",
    "is_baseline_summary",
    "item_features",
    "parse_weights",
    "recover_state",
    "render_summary",
    "stem",
    "tokens",
]

BASELINE_MODEL_NAME = "prefstream-baseline-v1"
"""Name under which summaries of this baseline are reported (never the real model's name)."""

BASELINE_HEADER = "Baseline profile (term statistics, not a language model)."
"""First sentence of every baseline summary; also how the baseline recognises its own output."""

MAX_SUMMARY_CHARS = 600
"""Hard upper bound on the length of a produced summary, in characters."""

HALF_LIFE_INTERACTIONS = 8.0
"""Old evidence loses half its weight for every this many new interactions."""

STALE_FACTOR = 0.5
"""Extra fading of a weak category that a window about its domain did not support."""
STALE_BELOW = 1.5
"""Categories weaker than this (after ageing) are the weak ones."""
STALE_STRONG_FACTOR = 0.85
"""Extra fading of a stronger category that a window about its domain did not support."""

EXCERPT_RETENTION_INTERACTIONS = 24
"""A foreign summary excerpt is carried until the baseline has seen this many interactions."""

NO_NEGATIVE_SAMPLE = "No negative sample."
NEUTRAL_SUMMARY = f"{BASELINE_HEADER} No interactions observed yet; preferences unknown."
_NOT_PROVIDED = {"", "not provided.", "not provided", '"not provided."'}

DOMAINS = ("movies", "news", "books", "items")
"""Domains with a sentence of their own (``items``: any other catalogue with categories)."""

CATEGORY_WEIGHT = 2.0
TITLE_WEIGHT = 1.0
MOVIE_TITLE_WEIGHT = 0.5
BODY_WEIGHT = 0.5
BODY_MASS = 3.0
FREE_TEXT_MASS = 6.0
MAX_LABEL_CHARS = 24
MAX_EXCERPT_CHARS = 140

# Tiers of the written profile: (lowest weight shown in the tier, highest weight it recovers).
# A term is recovered with a weight between the tier's two bounds, by its rank in the list.
LIKED_MIN, LIKED_TOP = 1.5, 4.0
SOMETIMES_MIN, SOMETIMES_TOP = 0.5, 1.5
AVOIDED_MIN, AVOIDED_TOP = 1.0, 4.0
WORD_MIN, WORD_TOP = 0.9, 1.5

_DOMAIN_STYLE = {
    # domain: (verb, noun, verb for passed-over terms)
    "movies": ("watches", "films", "passes on"),
    "news": ("reads", "news", "skips"),
    "books": ("reads", "books", "skips"),
    "items": ("likes", "items", "passes on"),
}
_NOUN_DOMAIN = {noun: domain for domain, (_, noun, _) in _DOMAIN_STYLE.items()}
_QUERY_DOMAINS = {
    "news": "news",
    "book": "books",
    "books": "books",
    "movie": "movies",
    "movies": "movies",
    "film": "movies",
    "films": "movies",
}

_STOP_WORDS = frozenset(
    """
    a about above after again against all also am an and any are aren't as at be because been
    before being below between both but by can can't could couldn't did didn't do does doesn't
    doing don't down during each even ever every few for from further get gets got had hadn't
    has hasn't have haven't having he her here hers herself him himself his how however i if in
    into is isn't it it's its itself just least less let like made make makes many may me might
    more most much must my myself near new no nor not now of off on once one only or other ought
    our ours ourselves out over own per please put rather recommend really said same say says
    see seen shall she should shouldn't since so some such than that that's the their theirs
    them themselves then there there's these they this those though through thus to too two
    under until up upon us use used very via was wasn't way we were weren't what what's when
    where which while who whom whose why will with within without won't would wouldn't yet you
    your yours yourself yourselves year years time times first last get getting going gone want
    """.split()
)
# Words that say what kind of item it is rather than what it is about: never salient.
_GENERIC_WORDS = frozenset(
    """
    news story stories book books novel novels film films movie movies item items title latest
    week weeks today report reports says
    """.split()
)

TOPIC_LEXICON: dict[str, dict[str, tuple[str, ...]]] = {
    "news": {
        "politics": (
            "politics political politician politicians election elections vote voters voting "
            "ballot campaign senate senator congress parliament parliamentary legislature "
            "legislative lawmaker lawmakers governor minister ministers president presidential "
            "party coalition government opposition referendum mayor cabinet diplomat diplomatic "
            "candidate candidates poll polls policy reform bill ethics inquiry"
        ).split(),
        "business": (
            "business economy economic economist market markets stock stocks shares shareholders "
            "investor investors earnings revenue profit profits quarterly forecast company "
            "companies corporate merger acquisition bank banks banking retail retailer ceo jobs "
            "layoffs inflation trade tariff tariffs buyback dividend carmaker sales industry "
            "slowdown growth startup startups fintech executive analysts"
        ).split(),
        "tech": (
            "tech technology software hardware app apps ai chip chips processor developer "
            "developers coding internet browser smartphone smartphones gadget gadgets "
            "cybersecurity vulnerability robot robotics quantum beta computing cloud engineers "
            "open-source"
        ).split(),
        "science": (
            "science scientific scientist scientists researcher researchers physics particle "
            "biology genome species discovery experiment experiments lab laboratory telescope "
            "astronomy astronomers nasa mars rover fossil fossils chemistry peer-reviewed "
            "findings"
        ).split(),
        "health": (
            "health healthy healthier medical medicine doctor doctors physician patients patient "
            "hospital clinic disease diseases vaccine vaccines fitness nutrition diet sleep "
            "cardiology heart cancer wellbeing screening mental therapy prevention"
        ).split(),
        "sports": (
            "sport sports league team match season championship coach coaches player players "
            "football soccer rugby tennis hockey basketball baseball quarterback olympic "
            "olympics tournament squad club injury standings rookie guard"
        ).split(),
        "entertainment": (
            "entertainment celebrity celebrities showbiz actor actress music album pop singer "
            "band concert awards award oscars grammy reality streaming series television tv "
            "charts hollywood premiere late-night host"
        ).split(),
        "travel": (
            "travel tourism tourist tourists trip trips destination destinations vacation "
            "holiday hotel hotels resort beach flights cruise itinerary itineraries hiking "
            "booking scenery sightseeing"
        ).split(),
        "food": (
            "food foods restaurant restaurants chef chefs recipe recipes cooking cook cooks dish "
            "dishes menu cuisine dining bakery pizza pizzeria ramen vegan chocolate tasting "
            "flavor culinary michelin"
        ).split(),
        "climate": (
            "climate environment environmental emissions carbon warming renewable solar energy "
            "pollution drought flood floods wildfire wildfires reforestation conservation "
            "glacier sustainability recycling"
        ).split(),
    },
    "books": {
        "fantasy": (
            "fantasy wizard wizards sorcerer sorceress magic dragon dragons kingdom spell "
            "spellbook elves quest curse knight enchanted wyvern throne realm"
        ).split(),
        "sci-fi": (
            "sci-fi science-fiction alien aliens planet planets galaxy starship android "
            "time-travel time-travelling dystopian colony neptune cyberpunk spaceship ai robot robots "
            "space mars future"
        ).split()
        + ["science fiction"],
        "mystery": (
            "mystery detective sleuth whodunit murder investigates clues inspector alibi witness "
            "coroner"
        ).split(),
        "romance": "romance romantic love lover lovers swoony heartwarming kiss".split()
        + ["love story"],
        "horror": (
            "horror haunted ghost terrifying chilling cursed paranormal monster creepy "
            "supernatural"
        ).split(),
        "history": (
            "history historical historian empire empires revolution medieval battles treaties "
            "century"
        ).split(),
        "biography": "biography memoir autobiography biographer".split() + ["life story"],
        "self-help": (
            "self-help habits motivation motivational mindfulness productivity self-confidence "
            "psychology"
        ).split()
        + ["personal development"],
        "cookbooks": (
            "cookbook cookbooks recipe recipes cooking baking meals kitchen pantry vegetarian"
        ).split(),
        "poetry": "poetry poems poem poet poets sonnets haiku verse lyrical".split(),
        "thriller": "thriller suspense conspiracy spy espionage".split(),
    },
}
"""Per domain, category -> keywords (single words or two-word phrases). The first keyword of a
category (its name) counts three times. Used for news and books, whose items carry no category
field in the AlignXplore+ formats."""

_WORD_RE = re.compile(r"[^\W\d_](?:[\w'\u2019-]*[^\W_])?")
_GENRES_RE = re.compile(r"(,?)[ \t]*Genres\s*:\s*([^\n]*)")
_FIELD_RE = re.compile(r"(?m)^\s*(Title|Abstract|Description)\s*:[ \t]*")
_QUERY_DOMAIN_RE = re.compile(r"recommend\s+(?:some\s+)?(\w+)", re.IGNORECASE)
_LIST_SPLIT_RE = re.compile(r",\s+and\s+|,\s+|\s+and\s+")
_NOUNS = "|".join(_NOUN_DOMAIN)
_DOMAIN_SENTENCE_RE = re.compile(
    rf"^(?P<sometimes>sometimes )?(?:watches|reads|likes) (?P<first>[^;]+?) (?P<noun>{_NOUNS})"
    r"(?=, sometimes |; |$)(?:, sometimes (?P<some>[^;]+))?(?:; (?:passes on|skips) (?P<neg>.+))?$",
    re.IGNORECASE,
)
_AVOID_SENTENCE_RE = re.compile(
    rf"^(?:passes on|skips) (?P<neg>[^;]+?) (?P<noun>{_NOUNS})$", re.IGNORECASE
)
_TREND_CLAUSE_RE = re.compile(r"^(?P<kind>more|less|no longer) into (?P<entries>.+)$")
_PICKS = "Picks often mention "
_PASSED = "passed-over items often mention "
_COUNT_RE = re.compile(r"^Built from (\d{1,12}) interactions? so far$")
_EXCERPT_RE = re.compile(r'Earlier notes from another writer: "([^"]*)"')
_LEGACY_RE = re.compile(
    r"(Gravitates to|Tends to pass over): ((?:[^.]|\.(?=\d))*)\."
)
_LEGACY_ENTRY_RE = re.compile(r"([^,()\"]+?)\s+\((\d+(?:\.\d+)?)\)")
_THINK_CLOSE = "</think>"


# --------------------------------------------------------------------------- text helpers


_ASCII_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _clean_text(text: str) -> str:
    """NFC-normalise and drop control characters other than newlines and tabs."""
    if text.isascii():  # the common case, without a per-character pass
        return _ASCII_CONTROL_RE.sub("", text)
    normal = unicodedata.normalize("NFC", text)
    return "".join(ch for ch in normal if ch in "\n\t" or unicodedata.category(ch)[0] != "C")


def tokens(text: str) -> list[str]:
    """Lower-cased content words: stop words, short words and numbers removed."""
    out: list[str] = []
    for match in _WORD_RE.finditer(text.casefold()):
        word = match.group(0).replace("\u2019", "'")
        if word.endswith("'s"):
            word = word[:-2]
        min_len = 3 if word.isascii() else 2
        if len(word) < min_len or word in _STOP_WORDS:
            continue
        out.append(word[:MAX_LABEL_CHARS].rstrip("'-"))
    return out


def stem(word: str) -> str:
    """A light English plural stemmer for matching (``documentaries`` -> ``documentary``)."""
    parts = word.split()
    if len(parts) > 1:
        return " ".join(stem(p) for p in parts)
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


_LABEL_WORD_RE = re.compile(r"[^\W\d_](?:[\w'\u2019-]*[^\W_])?|&")


def _label(text: str) -> str | None:
    """A category label: lower-case words; ``and`` is written ``&`` so lists stay parseable."""
    if text.strip().startswith("("):  # MovieLens "(no genres listed)"
        return None
    words = [m.group(0) for m in _LABEL_WORD_RE.finditer(text.casefold().replace("\u2019", "'"))]
    label = " ".join("&" if w == "and" else w for w in words)[:MAX_LABEL_CHARS]
    label = label.strip(" '-&")
    return label or None


def _build_lexicon() -> dict[str, dict[str, list[tuple[str, float]]]]:
    out: dict[str, dict[str, list[tuple[str, float]]]] = {}
    for domain, categories in TOPIC_LEXICON.items():
        table: dict[str, list[tuple[str, float]]] = {}
        for category, keywords in categories.items():
            for i, keyword in enumerate(keywords):
                table.setdefault(stem(keyword), []).append((category, 3.0 if i == 0 else 1.0))
        out[domain] = table
    return out


_LEXICON = _build_lexicon()


def topic_scores(domain: str, texts: Iterable[str]) -> dict[str, float]:
    """Lexicon scores of the categories of ``domain`` in some texts (empty: no lexicon)."""
    table = _LEXICON.get(domain)
    scores: dict[str, float] = {}
    if not table:
        return scores
    for text in texts:
        words = [stem(w) for w in tokens(text)]
        for i, word in enumerate(words):
            keys = [word] if i + 1 >= len(words) else [word, f"{word} {words[i + 1]}"]
            for key in keys:
                for category, weight in table.get(key, ()):
                    scores[category] = scores.get(category, 0.0) + weight
    return scores


def _best_topic(domain: str, texts: Iterable[str]) -> str | None:
    scores = topic_scores(domain, texts)
    if not scores:
        return None
    order = list(TOPIC_LEXICON[domain])
    return min(scores, key=lambda c: (-scores[c], order.index(c)))


# --------------------------------------------------------------------------- items


@dataclass(frozen=True, slots=True)
class ItemFeatures:
    """What one item text is about: its domain, categories (strong) and words (weak)."""

    domain: str | None = None
    categories: tuple[str, ...] = ()
    words: dict[str, float] = field(default_factory=dict)


def item_features(raw: str, domain_hint: str | None = None) -> ItemFeatures:
    """Parse an item text in the AlignXplore+ formats into categories and weighted words.

    ``domain_hint`` (from the triple's query) wins over the domain guessed from the format.
    The result is shared between calls with the same arguments: do not modify it.
    """
    return _item_features(raw, domain_hint)


@lru_cache(maxsize=8192)
def _item_features(raw: str, domain_hint: str | None) -> ItemFeatures:
    text = _clean_text(raw).strip()
    if not text or text.casefold() == NO_NEGATIVE_SAMPLE.casefold():
        return ItemFeatures()
    genres: tuple[str, ...] = ()
    movie_format = False
    genre_match = _GENRES_RE.search(text)
    if genre_match:
        movie_format = bool(genre_match.group(1))
        genres = tuple(g for g in (_label(x) for x in genre_match.group(2).split("|")) if g)
        text = (text[: genre_match.start()] + text[genre_match.end() :]).strip()
    fields: dict[str, str] = {}
    pieces = _FIELD_RE.split(text)
    untagged = pieces[0]
    for name, value in zip(pieces[1::2], pieces[2::2], strict=False):
        fields[name] = (fields.get(name, "") + " " + value).strip()
    title = fields.get("Title", "")
    body = " ".join(
        part
        for part in (untagged, fields.get("Abstract", ""), fields.get("Description", ""))
        if part.strip()
    )
    if genre_match:
        domain = "movies" if movie_format else "items"
    elif "Abstract" in fields:
        domain = "news"
    elif "Description" in fields:
        domain = "books"
    else:
        domain = None
    if domain is not None and domain_hint in DOMAINS:
        domain = domain_hint
    if genres:
        categories = _unique(genres)
    elif domain in TOPIC_LEXICON:
        topic = _best_topic(domain, (title, body))
        categories = [topic] if topic else []
    else:
        categories = []
    words: dict[str, float] = {}
    title_weight = MOVIE_TITLE_WEIGHT if domain == "movies" else TITLE_WEIGHT
    for word in _unique(w for w in tokens(title) if w not in _GENERIC_WORDS):
        words[word] = max(words.get(word, 0.0), title_weight)
    body_words = _unique(w for w in tokens(body) if w not in _GENERIC_WORDS)
    if body_words:
        # free text (a chat reply, say) is all the item has: its words count like a title's
        top, mass = (BODY_WEIGHT, BODY_MASS) if fields else (TITLE_WEIGHT, FREE_TEXT_MASS)
        body_weight = min(top, mass / len(body_words))
        for word in body_words:
            words[word] = max(words.get(word, 0.0), body_weight)
    return ItemFeatures(domain=domain, categories=tuple(categories), words=words)


def _unique(words: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(words))


def _query_domain(query: str) -> str | None:
    match = _QUERY_DOMAIN_RE.search(query)
    if match:
        return _QUERY_DOMAINS.get(match.group(1).casefold())
    return None


def _attr(triple: Any, name: str) -> str:
    value = getattr(triple, name, None)
    if value is None and isinstance(triple, dict):
        value = triple.get(name)
    return value if isinstance(value, str) else ("" if value is None else str(value))


# --------------------------------------------------------------------------- state

Key = tuple[str, str]  # (domain, category label)


@dataclass(slots=True)
class ProfileState:
    """Everything the baseline remembers between calls (and writes into the summary).

    ``placements`` says in which list of the summary each category was found (``liked``,
    ``sometimes``, ``avoided``, ``lately``, ``less``); it is how trends are detected.
    """

    categories: dict[Key, float] = field(default_factory=dict)
    words: dict[str, float] = field(default_factory=dict)
    interactions: int = 0
    excerpt: str | None = None
    placements: dict[Key, str] = field(default_factory=dict)


class BaselineSummarizer:
    """Deterministic term-statistics baseline; stands in for AlignXplore+ without a GPU.

    It is *not* the AlignXplore+ model. Same inputs always give the same summary.
    """

    name: str = BASELINE_MODEL_NAME

    def summarize(self, previous_summary: str | None, triples: Sequence[Any]) -> str:
        """Update ``previous_summary`` with a window of triples.

        Args:
            previous_summary: The last summary (baseline or anyone else's prose), or ``None``.
                ``"Not Provided."`` counts as no summary.
            triples: Objects with string attributes ``query``, ``chosen`` and ``rejected``.

        Returns:
            A readable English summary of at most :data:`MAX_SUMMARY_CHARS` characters. With
            no triples, ``previous_summary`` is returned unchanged (or a neutral sentence).
        """
        window = list(triples)
        if not window:
            if previous_summary is None or _is_missing(previous_summary):
                return NEUTRAL_SUMMARY
            return previous_summary
        state = recover_state(previous_summary)
        evidence = _apply_window(state, window)
        return render_summary(state, evidence)


def _is_missing(summary: str) -> bool:
    return _clean_text(summary).strip().casefold() in _NOT_PROVIDED


def is_baseline_summary(summary: str | None) -> bool:
    """Whether ``summary`` was written by this baseline (it starts with the header)."""
    return summary is not None and _clean_text(summary).strip().startswith(BASELINE_HEADER)


def parse_weights(summary: str | None) -> dict[str, float]:
    """Signed term weights recovered from a baseline summary (liked > 0, passed over < 0).

    Keys are category labels (summed over domains) and salient words. Returns an empty dict for
    anything that is not a baseline summary.
    """
    state = recover_state(summary)
    out: dict[str, float] = {}
    for (_, label), weight in state.categories.items():
        out[label] = out.get(label, 0.0) + weight
    for word, weight in state.words.items():
        out[word] = out.get(word, 0.0) + weight
    return out


# --------------------------------------------------------------------------- state recovery


def recover_state(previous_summary: str | None) -> ProfileState:
    """Rebuild approximate weights from a previous summary, or keep an excerpt of prose."""
    if previous_summary is None or _is_missing(previous_summary):
        return ProfileState()
    text = _clean_text(previous_summary).strip()
    if not text.startswith(BASELINE_HEADER):
        return ProfileState(excerpt=_excerpt(text))
    # a baseline summary is at most MAX_SUMMARY_CHARS long: anything far longer is not one
    return _parse_baseline_summary(text[len(BASELINE_HEADER) : 4 * MAX_SUMMARY_CHARS])


def _ladder(rank: int, count: int, low: float, top: float) -> float:
    """Weight of the ``rank``-th (0-based) of ``count`` entries of a tier: first = strongest.

    The tier's range is cut into ``count`` equal slices and each entry gets its slice's middle.
    """
    return top - (top - low) * (rank + 0.5) / max(count, 1)


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in _LIST_SPLIT_RE.split(text.strip()) if part.strip()]


def _parse_baseline_summary(text: str) -> ProfileState:
    state = ProfileState()
    excerpt_match = _EXCERPT_RE.search(text)
    if excerpt_match:
        state.excerpt = excerpt_match.group(1).strip() or None
        text = text[: excerpt_match.start()] + text[excerpt_match.end() :]
    if _LEGACY_RE.search(text):
        _parse_legacy(state, text)
    for sentence in re.split(r"\.(?:\s+|$)", text):
        sentence = " ".join(sentence.split())
        if not sentence:
            continue
        count = _COUNT_RE.match(sentence)
        if count:
            state.interactions = int(count.group(1))
        elif sentence.startswith("Lately "):
            _parse_trends(state, sentence[len("Lately ") :])
        elif sentence.startswith("No longer into "):
            pass  # interests that were dropped: nothing to carry
        elif sentence.startswith(_PICKS) or sentence.startswith(_PASSED.capitalize()):
            _parse_words(state, sentence)
        else:
            _parse_domain_sentence(state, sentence)
    cap = CATEGORY_WEIGHT * _effective_count(state.interactions)
    state.categories = {k: max(-cap, min(cap, w)) for k, w in state.categories.items()}
    word_cap = TITLE_WEIGHT * _effective_count(state.interactions)
    state.words = {k: max(-word_cap, min(word_cap, w)) for k, w in state.words.items()}
    return state


def _effective_count(interactions: int) -> float:
    """How many interactions' worth of (decayed) evidence a profile can hold at most."""
    if interactions <= 0:
        return 1.0
    ratio = 0.5 ** (1.0 / HALF_LIFE_INTERACTIONS)
    return (1.0 - ratio**interactions) / (1.0 - ratio)


def _place(state: ProfileState, domain: str, labels: list[str], tier: str) -> None:
    low, top = {
        "liked": (LIKED_MIN, LIKED_TOP),
        "lately": (LIKED_MIN, LIKED_TOP),
        "sometimes": (SOMETIMES_MIN, SOMETIMES_TOP),
        "less": (SOMETIMES_MIN, SOMETIMES_TOP),
        "avoided": (AVOIDED_MIN, AVOIDED_TOP),
    }[tier]
    sign = -1.0 if tier == "avoided" else 1.0
    for rank, raw in enumerate(labels):
        label = _label(raw)
        key = (domain, label) if label else None
        if key is None or key in state.categories:
            continue
        state.categories[key] = sign * _ladder(rank, len(labels), low, top)
        state.placements[key] = tier


def _parse_domain_sentence(state: ProfileState, sentence: str) -> None:
    match = _DOMAIN_SENTENCE_RE.match(sentence)
    if match:
        domain = _NOUN_DOMAIN[match.group("noun").casefold()]
        first = _split_list(match.group("first"))
        if match.group("sometimes"):
            _place(state, domain, first, "sometimes")
        else:
            _place(state, domain, first, "liked")
            _place(state, domain, _split_list(match.group("some") or ""), "sometimes")
        _place(state, domain, _split_list(match.group("neg") or ""), "avoided")
        return
    match = _AVOID_SENTENCE_RE.match(sentence)
    if match:
        domain = _NOUN_DOMAIN[match.group("noun").casefold()]
        _place(state, domain, _split_list(match.group("neg")), "avoided")


def _parse_trends(state: ProfileState, text: str) -> None:
    for clause in text.split("; "):
        match = _TREND_CLAUSE_RE.match(clause.strip())
        if not match:
            continue
        entries = _trend_entries(match.group("entries"))
        kind = match.group("kind")
        if kind == "no longer":
            continue  # a dropped interest: nothing to carry
        tier = "lately" if kind == "more" else "less"
        by_domain: dict[str, list[str]] = {}
        for domain, label in entries:
            by_domain.setdefault(domain, []).append(label)
        for domain, labels in by_domain.items():
            _place(state, domain, labels, tier)


def _trend_entries(text: str) -> list[tuple[str, str]]:
    """``documentary and war films and climate news`` -> [(movies, documentary), ...]."""
    out: list[tuple[str, str]] = []
    pending: list[str] = []
    for chunk in _split_list(text):
        head, _, last = chunk.rpartition(" ")
        domain = _NOUN_DOMAIN.get(last.casefold())
        if domain is None:
            pending.append(chunk)
            continue
        if head:
            pending.append(head)
        out += [(domain, label) for label in pending]
        pending = []
    return out


def _parse_words(state: ProfileState, sentence: str) -> None:
    picks, passed = "", ""
    if sentence.startswith(_PICKS):
        rest = sentence[len(_PICKS) :]
        picks, _, passed = rest.partition("; " + _PASSED)
    else:
        passed = sentence[len(_PASSED) :]
    for words, sign in ((_split_list(picks), 1.0), (_split_list(passed), -1.0)):
        for rank, word in enumerate(words):
            word = word.casefold()
            if word and word not in state.words:
                state.words[word] = sign * _ladder(rank, len(words), WORD_MIN, WORD_TOP)


def _parse_legacy(state: ProfileState, text: str) -> None:
    """Summaries of the earlier baseline (``Gravitates to: sci-fi (4.2), ...``): words only."""
    for match in _LEGACY_RE.finditer(text):
        sign = 1.0 if match.group(1) == "Gravitates to" else -1.0
        for entry in _LEGACY_ENTRY_RE.finditer(match.group(2)):
            label = entry.group(1).strip().casefold()
            weight = float(entry.group(2))
            if label and math.isfinite(weight):
                state.words[label] = sign * min(weight, WORD_TOP)


def _excerpt(text: str) -> str | None:
    """A short, single-line, quote-free excerpt of foreign prose (think block removed)."""
    if _THINK_CLOSE in text:
        text = text.split(_THINK_CLOSE)[-1]
    flat = " ".join(text.replace('"', "'").split())
    if not flat:
        return None
    return _shorten(flat, MAX_EXCERPT_CHARS)


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.") + "\u2026"


# --------------------------------------------------------------------------- window evidence


@dataclass(slots=True)
class _Evidence:
    """What the window itself contributed: per-category gains and the domains it touched."""

    gains: dict[Key, float] = field(default_factory=dict)
    domains: set[str] = field(default_factory=set)
    previous: dict[Key, str] = field(default_factory=dict)


def _apply_window(state: ProfileState, window: list[Any]) -> _Evidence:
    """Decay the old evidence by the window size, then add the window's evidence."""
    evidence = _Evidence(previous=dict(state.placements))
    decay = 0.5 ** (len(window) / HALF_LIFE_INTERACTIONS)
    old = {k: v * decay for k, v in state.categories.items()}
    state.categories = dict(old)
    state.words = {k: v * decay for k, v in state.words.items()}
    for triple in window:
        hint = _query_domain(_clean_text(_attr(triple, "query")))
        chosen = item_features(_attr(triple, "chosen"), hint)
        rejected = item_features(_attr(triple, "rejected"), hint)
        for item, sign in ((chosen, 1.0), (rejected, -1.0)):
            if item.domain is not None and item.categories:
                evidence.domains.add(item.domain)
            for label in item.categories:
                key = (item.domain or "items", label)
                state.categories[key] = state.categories.get(key, 0.0) + sign * CATEGORY_WEIGHT
                evidence.gains[key] = evidence.gains.get(key, 0.0) + sign * CATEGORY_WEIGHT
            for word, weight in item.words.items():
                state.words[word] = state.words.get(word, 0.0) + sign * weight
    # an interest (or aversion) the window gave no support to, in a domain the window was
    # about, fades faster than by age alone: that is what moves it down a list, then out
    for key, weight in old.items():
        gain = evidence.gains.get(key, 0.0)
        if key[0] in evidence.domains and weight * gain <= 0 and weight != 0:
            fade = STALE_FACTOR if abs(weight) < STALE_BELOW else STALE_STRONG_FACTOR
            state.categories[key] = weight * fade + gain
    state.interactions += len(window)
    if state.interactions >= EXCERPT_RETENTION_INTERACTIONS:
        state.excerpt = None
    return evidence


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True, slots=True)
class _Layout:
    """How many terms of each kind a rendering shows (smaller layouts when it is too long)."""

    liked: int = 4
    sometimes: int = 2
    avoided: int = 4
    trends: int = 3
    picks: int = 3
    passed: int = 2
    excerpt_chars: int = MAX_EXCERPT_CHARS


_LAYOUTS = (
    _Layout(),
    _Layout(excerpt_chars=80),
    _Layout(liked=3, avoided=3, picks=2, passed=1, excerpt_chars=80),
    _Layout(liked=3, sometimes=1, avoided=2, trends=2, picks=2, passed=0, excerpt_chars=60),
    _Layout(liked=2, sometimes=1, avoided=2, trends=2, picks=1, passed=0, excerpt_chars=0),
    _Layout(liked=2, sometimes=0, avoided=1, trends=1, picks=0, passed=0, excerpt_chars=0),
    _Layout(liked=1, sometimes=0, avoided=1, trends=1, picks=0, passed=0, excerpt_chars=0),
    _Layout(liked=1, sometimes=0, avoided=0, trends=0, picks=0, passed=0, excerpt_chars=0),
)


def render_summary(state: ProfileState, evidence: _Evidence | None = None) -> str:
    """Render the state as sentences that :func:`recover_state` can read back."""
    evidence = evidence or _Evidence()
    text = ""
    for layout in _LAYOUTS:
        text = _render(state, evidence, layout)
        if len(text) <= MAX_SUMMARY_CHARS:
            return text
    return _hard_cut(text)


def _ranked(items: Iterable[tuple[Key, float]]) -> list[tuple[Key, float]]:
    return sorted(items, key=lambda kv: (-abs(kv[1]), kv[0][1]))


@dataclass(slots=True)
class _DomainPlan:
    liked: list[tuple[str, float]] = field(default_factory=list)
    sometimes: list[tuple[str, float]] = field(default_factory=list)
    avoided: list[tuple[str, float]] = field(default_factory=list)

    @property
    def mass(self) -> float:
        return sum(abs(w) for _, w in self.liked + self.sometimes + self.avoided)

    @staticmethod
    def labels(entries: list[tuple[str, float]]) -> list[str]:
        return [label for label, _ in sorted(entries, key=lambda e: (-abs(e[1]), e[0]))]


def _render(state: ProfileState, evidence: _Evidence, layout: _Layout) -> str:
    plans: dict[str, _DomainPlan] = {}
    rising: list[tuple[float, Key, float]] = []
    falling: list[tuple[float, Key, float]] = []
    gone: list[tuple[float, Key, float]] = []
    for domain in DOMAINS:
        entries = [(k, w) for k, w in state.categories.items() if k[0] == domain]
        positive = _ranked((k, w) for k, w in entries if w >= SOMETIMES_MIN)
        liked = [(k, w) for k, w in positive if w >= LIKED_MIN]
        sometimes = liked[layout.liked :] + [(k, w) for k, w in positive if w < LIKED_MIN]
        liked = liked[: layout.liked]
        sometimes = sometimes[: layout.sometimes]
        avoided = _ranked((k, w) for k, w in entries if w <= -AVOIDED_MIN)[: layout.avoided]
        plan = plans[domain] = _DomainPlan(avoided=[(k[1], w) for k, w in avoided])
        # trends only where the previous summary said something about the domain and this
        # window brought evidence for it (no news is not a change of taste)
        active = domain in evidence.domains and any(k[0] == domain for k in evidence.previous)
        for key, weight in liked:
            was = evidence.previous.get(key)
            gain = evidence.gains.get(key, 0.0)
            if active and was not in ("liked", "lately") and gain > 0:
                rising.append((-gain, key, weight))
            else:
                plan.liked.append((key[1], weight))
        for key, weight in sometimes:
            if active and evidence.previous.get(key) in ("liked", "lately"):
                falling.append((-weight, key, weight))
            else:
                plan.sometimes.append((key[1], weight))
        if active:
            shown = {k for k, _ in liked + sometimes + avoided}
            for key, was in evidence.previous.items():
                weight = state.categories.get(key, 0.0)
                if (key[0] == domain and was != "avoided" and key not in shown
                        and weight < SOMETIMES_MIN):
                    gone.append((weight, key, weight))
    rising.sort()
    falling.sort()
    gone.sort()
    # trend entries beyond the layout's allowance go back to their ordinary list
    for _, key, weight in rising[layout.trends :]:
        plans[key[0]].liked.append((key[1], weight))
    for _, key, weight in falling[layout.trends :]:
        plans[key[0]].sometimes.append((key[1], weight))
    rising, falling, gone = rising[: layout.trends], falling[: layout.trends], gone[: layout.trends]

    sentences = [BASELINE_HEADER]
    order = sorted(DOMAINS, key=lambda d: (-plans[d].mass, DOMAINS.index(d)))
    for domain in order:
        sentence = _domain_sentence(domain, plans[domain])
        if sentence:
            sentences.append(sentence)
    trend = _trend_sentence([k for _, k, _ in rising], [k for _, k, _ in falling],
                            [k for _, k, _ in gone])
    if trend:
        sentences.append(trend)
    if len(sentences) == 1:
        sentences.append("No clear preferences yet.")
    words = _words_sentence(state, layout)
    if words:
        sentences.append(words)
    noun = "interaction" if state.interactions == 1 else "interactions"
    sentences.append(f"Built from {state.interactions} {noun} so far.")
    if state.excerpt and layout.excerpt_chars:
        sentences.append(
            f'Earlier notes from another writer: "{_shorten(state.excerpt, layout.excerpt_chars)}"'
        )
    return " ".join(sentences)


def _join(labels: Sequence[str]) -> str:
    if len(labels) <= 1:
        return "".join(labels)
    return ", ".join(labels[:-1]) + " and " + labels[-1]


def _domain_sentence(domain: str, plan: _DomainPlan) -> str:
    verb, noun, avoid = _DOMAIN_STYLE[domain]
    liked, sometimes = plan.labels(plan.liked), plan.labels(plan.sometimes)
    avoided = plan.labels(plan.avoided)
    if liked:
        text = f"{verb.capitalize()} {_join(liked)} {noun}"
        if sometimes:
            text += f", sometimes {_join(sometimes)}"
    elif sometimes:
        text = f"Sometimes {verb} {_join(sometimes)} {noun}"
    elif avoided:
        return f"{avoid.capitalize()} {_join(avoided)} {noun}."
    else:
        return ""
    if avoided:
        text += f"; {avoid} {_join(avoided)}"
    return text + "."


def _trend_entries_text(keys: list[Key]) -> str:
    groups: dict[str, list[str]] = {}
    for domain, label in keys:
        groups.setdefault(domain, []).append(label)
    return _join([f"{_join(labels)} {_DOMAIN_STYLE[domain][1]}" for domain, labels in groups.items()])


def _trend_sentence(rising: list[Key], falling: list[Key], gone: list[Key]) -> str:
    clauses = []
    if rising:
        clauses.append("more into " + _trend_entries_text(rising))
    if falling:
        clauses.append("less into " + _trend_entries_text(falling))
    if gone and not clauses:
        return "No longer into " + _trend_entries_text(gone) + "."
    if gone:
        clauses.append("no longer into " + _trend_entries_text(gone))
    return ("Lately " + "; ".join(clauses) + ".") if clauses else ""


def _words_sentence(state: ProfileState, layout: _Layout) -> str:
    labels = {label for _, label in state.categories}
    candidates = [(w, v) for w, v in state.words.items() if w not in labels]
    picks = sorted(((w, v) for w, v in candidates if v >= WORD_MIN), key=lambda x: (-x[1], x[0]))
    passed = sorted(((w, v) for w, v in candidates if v <= -WORD_MIN), key=lambda x: (x[1], x[0]))
    picks_text = _join([w for w, _ in picks[: layout.picks]])
    passed_text = _join([w for w, _ in passed[: layout.passed]])
    if picks_text and passed_text:
        return f"{_PICKS}{picks_text}; {_PASSED}{passed_text}."
    if picks_text:
        return f"{_PICKS}{picks_text}."
    if passed_text:
        return f"{_PASSED.capitalize()}{passed_text}."
    return ""


def _hard_cut(text: str) -> str:
    """Last resort: cut at a sentence end that fits (never expected with capped labels)."""
    cut = text[:MAX_SUMMARY_CHARS]
    end = cut.rfind(". ")
    return cut[: end + 1] if end > 0 else cut
