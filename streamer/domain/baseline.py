"""A deterministic CPU *baseline* preference summarizer (NOT the AlignXplore+ model).

This module is a baseline: pure Python term statistics, no language model, no I/O and no
third-party imports. It exists so that tests, benchmarks and the model stand-in can produce
plausible, readable summaries without a GPU. Everything it writes is labelled as a baseline
(see :data:`BASELINE_MODEL_NAME` and :data:`BASELINE_HEADER`).

Method
------
1. Each item text is parsed in the AlignXplore+ per-domain formats (``Title:``/``Abstract:``
   for news, ``Title:``/``Description:`` for books, ``Title: ..., Genres: a|b`` for movies,
   anything else as free text). Genres are strong features; title words are medium ones;
   abstract, description and free-text words are weak ones (their total mass per item is
   capped so long texts do not drown short ones). Stop words are removed.
2. Every triple adds the chosen item's features and subtracts the rejected item's features.
3. Weights recovered from the previous summary decay by half every
   :data:`HALF_LIFE_INTERACTIONS` interactions of the new window before the window's evidence
   is added, so a user whose tastes drift changes summary within a few windows.
4. The strongest positive and negative terms are written back as readable sentences with
   their weights in brackets, e.g. ``Gravitates to: sci-fi (4.2), space (3.1).``, which is the
   compact notation the next call parses to recover the state.

A previous summary written by someone else (for example free prose from the real model) cannot
be parsed into weights: a short excerpt of it is carried along for a while, then dropped.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BASELINE_HEADER",
    "BASELINE_MODEL_NAME",
    "MAX_SUMMARY_CHARS",
    "NEUTRAL_SUMMARY",
    "BaselineSummarizer",
    "parse_weights",
]

BASELINE_MODEL_NAME = "prefstream-baseline-v1"
"""Name under which summaries of this baseline are reported (never the real model's name)."""

BASELINE_HEADER = "Baseline profile (term statistics, not a language model)."
"""First sentence of every baseline summary; also how the baseline recognises its own output."""

MAX_SUMMARY_CHARS = 600
"""Hard upper bound on the length of a produced summary, in characters."""

HALF_LIFE_INTERACTIONS = 8.0
"""Old evidence loses half its weight for every this many new interactions."""

EXCERPT_RETENTION_INTERACTIONS = 24
"""A foreign summary excerpt is carried until the baseline has seen this many interactions."""

NO_NEGATIVE_SAMPLE = "No negative sample."
NEUTRAL_SUMMARY = f"{BASELINE_HEADER} No interactions observed yet; preferences unknown."
_NOT_PROVIDED = {"", "not provided.", "not provided", '"not provided."'}

GENRE_WEIGHT = 2.0
TITLE_WEIGHT = 1.0
MOVIE_TITLE_WEIGHT = 0.5
BODY_WEIGHT = 0.5
BODY_MASS = 3.0
MIN_SHOWN_WEIGHT = 0.1
MAX_LABEL_CHARS = 24
MAX_INTERESTS = 8
MAX_AVOIDS = 5
MAX_EXCERPT_CHARS = 140

_DOMAIN_LABELS = ("movies", "news", "books", "general requests")
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

_WORD_RE = re.compile(r"[^\W\d_](?:[\w'\u2019-]*[^\W_])?")
_GENRES_RE = re.compile(r",?\s*Genres\s*:\s*([^\n]*)")
_FIELD_RE = re.compile(r"(?m)^\s*(Title|Abstract|Description)\s*:[ \t]*")
_QUERY_DOMAIN_RE = re.compile(r"recommend\s+(?:some\s+)?(\w+)", re.IGNORECASE)
_DEFAULT_QUERY_RE = re.compile(r"^please recommend some [\w ]+ to me\.?$", re.IGNORECASE)
_NUMBER = r"\d+(?:\.\d+)?"
_SENTENCE_BODY = r"((?:[^.]|\.(?=\d))*)\."
_INTERESTS_RE = re.compile(r"Gravitates to: " + _SENTENCE_BODY)
_AVOIDS_RE = re.compile(r"Tends to pass over: " + _SENTENCE_BODY)
_DOMAINS_RE = re.compile(r"Mostly engages with " + _SENTENCE_BODY)
_ENTRY_RE = re.compile(r"([^,()\"]+?)\s+\((" + _NUMBER + r")\)")
_COUNT_RE = re.compile(r"Built from (\d+) interactions?")
_EXCERPT_RE = re.compile(r'Earlier notes from another writer: "([^"]*)"')
_THINK_CLOSE = "</think>"


@dataclass(frozen=True, slots=True)
class _ParsedItem:
    """The fields recognised in one item text."""

    title: str = ""
    body: str = ""
    genres: tuple[str, ...] = ()
    domain: str | None = None


@dataclass(slots=True)
class _ProfileState:
    """Everything the baseline remembers between calls (and writes into the summary)."""

    weights: dict[str, float] = field(default_factory=dict)
    domains: dict[str, float] = field(default_factory=dict)
    interactions: int = 0
    excerpt: str | None = None


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
        _apply_window(state, window)
        return render_summary(state)


# --------------------------------------------------------------------------- state recovery


def _is_missing(summary: str) -> bool:
    return _clean_text(summary).strip().casefold() in _NOT_PROVIDED


def recover_state(previous_summary: str | None) -> _ProfileState:
    """Rebuild the weights from a previous summary (baseline notation) or keep an excerpt."""
    if previous_summary is None or _is_missing(previous_summary):
        return _ProfileState()
    text = _clean_text(previous_summary).strip()
    if not text.startswith(BASELINE_HEADER):
        return _ProfileState(excerpt=_excerpt(text))
    return _parse_baseline_summary(text)


def parse_weights(summary: str | None) -> dict[str, float]:
    """Signed term weights written in a baseline summary (interests > 0, avoided < 0).

    Returns an empty dict for anything that is not a baseline summary.
    """
    return dict(recover_state(summary).weights)


def _parse_baseline_summary(text: str) -> _ProfileState:
    state = _ProfileState()
    excerpt_match = _EXCERPT_RE.search(text)
    if excerpt_match:
        state.excerpt = excerpt_match.group(1).strip() or None
        text = text[: excerpt_match.start()] + text[excerpt_match.end() :]
    for label, weight in _entries(_INTERESTS_RE, text):
        state.weights[label] = state.weights.get(label, 0.0) + weight
    for label, weight in _entries(_AVOIDS_RE, text):
        state.weights[label] = state.weights.get(label, 0.0) - weight
    for label, weight in _entries(_DOMAINS_RE, text, strip_and=True):
        if label in _DOMAIN_LABELS:
            state.domains[label] = weight
    count = _COUNT_RE.search(text)
    state.interactions = int(count.group(1)) if count else 0
    return state


def _entries(
    sentence_re: re.Pattern[str], text: str, *, strip_and: bool = False
) -> list[tuple[str, float]]:
    match = sentence_re.search(text)
    if not match:
        return []
    out: list[tuple[str, float]] = []
    for entry in _ENTRY_RE.finditer(match.group(1)):
        label = entry.group(1).strip().casefold()
        if strip_and and label.startswith("and "):
            label = label[4:].strip()
        weight = float(entry.group(2))
        if label and math.isfinite(weight):
            out.append((label, weight))
    return out


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


def _apply_window(state: _ProfileState, window: list[Any]) -> None:
    """Decay the old evidence by the window size, then add the window's evidence."""
    decay = 0.5 ** (len(window) / HALF_LIFE_INTERACTIONS)
    state.weights = {k: v * decay for k, v in state.weights.items()}
    state.domains = {k: v * decay for k, v in state.domains.items()}
    for triple in window:
        query = _clean_text(_attr(triple, "query"))
        chosen = _parse_item(_attr(triple, "chosen"))
        rejected = _parse_item(_attr(triple, "rejected"))
        for label, weight in _item_features(chosen).items():
            state.weights[label] = state.weights.get(label, 0.0) + weight
        for label, weight in _item_features(rejected).items():
            state.weights[label] = state.weights.get(label, 0.0) - weight
        domain = _triple_domain(query, chosen, rejected)
        state.domains[domain] = state.domains.get(domain, 0.0) + 1.0
    state.interactions += len(window)
    if state.interactions >= EXCERPT_RETENTION_INTERACTIONS:
        state.excerpt = None


def _attr(triple: Any, name: str) -> str:
    value = getattr(triple, name, None)
    if value is None and isinstance(triple, dict):
        value = triple.get(name)
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _clean_text(text: str) -> str:
    """NFC-normalise and drop control characters other than newlines and tabs."""
    normal = unicodedata.normalize("NFC", text)
    return "".join(ch for ch in normal if ch in "\n\t" or unicodedata.category(ch)[0] != "C")


def _parse_item(raw: str) -> _ParsedItem:
    """Split an item text into title, body and genres, and guess its domain."""
    text = _clean_text(raw).strip()
    if not text or text.casefold() == NO_NEGATIVE_SAMPLE.casefold():
        return _ParsedItem()
    genres: tuple[str, ...] = ()
    genre_match = _GENRES_RE.search(text)
    if genre_match:
        genres = tuple(g.strip() for g in genre_match.group(1).split("|") if g.strip())
        text = (text[: genre_match.start()] + text[genre_match.end() :]).strip()
    fields: dict[str, str] = {}
    pieces = _FIELD_RE.split(text)
    untagged = pieces[0]
    for name, value in zip(pieces[1::2], pieces[2::2], strict=False):
        fields[name] = (fields.get(name, "") + " " + value).strip()
    body = " ".join(
        part
        for part in (untagged, fields.get("Abstract", ""), fields.get("Description", ""))
        if part.strip()
    )
    domain = None
    if genres:
        domain = "movies"
    elif "Abstract" in fields:
        domain = "news"
    elif "Description" in fields:
        domain = "books"
    return _ParsedItem(title=fields.get("Title", ""), body=body, genres=genres, domain=domain)


def _tokens(text: str) -> list[str]:
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


def _genre_label(genre: str) -> str | None:
    if genre.strip().startswith("("):  # MovieLens "(no genres listed)"
        return None
    words = [m.group(0) for m in _WORD_RE.finditer(genre.casefold())]
    label = " ".join(words)[:MAX_LABEL_CHARS].strip(" '-")
    return label or None


def _item_features(item: _ParsedItem) -> dict[str, float]:
    """Feature weights of one item: genres strong, title medium, body weak and capped."""
    features: dict[str, float] = {}
    for genre in item.genres:
        label = _genre_label(genre)
        if label:
            features[label] = max(features.get(label, 0.0), GENRE_WEIGHT)
    title_weight = MOVIE_TITLE_WEIGHT if item.genres else TITLE_WEIGHT
    for word in _unique(_tokens(item.title)):
        features[word] = max(features.get(word, 0.0), title_weight)
    body_words = _unique(_tokens(item.body))
    if body_words:
        body_weight = min(BODY_WEIGHT, BODY_MASS / len(body_words))
        for word in body_words:
            features[word] = max(features.get(word, 0.0), body_weight)
    return features


def _unique(words: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(words))


def _triple_domain(query: str, chosen: _ParsedItem, rejected: _ParsedItem) -> str:
    match = _QUERY_DOMAIN_RE.search(query)
    if match and match.group(1).casefold() in _QUERY_DOMAINS:
        return _QUERY_DOMAINS[match.group(1).casefold()]
    if chosen.domain or rejected.domain:
        return chosen.domain or rejected.domain or "general requests"
    return "general requests"


# --------------------------------------------------------------------------- rendering


def render_summary(state: _ProfileState) -> str:
    """Render the state as readable sentences that :func:`recover_state` can parse back."""
    layouts = [
        (MAX_INTERESTS, MAX_AVOIDS, MAX_EXCERPT_CHARS),
        (MAX_INTERESTS, MAX_AVOIDS, 80),
        (6, 4, 80),
        (5, 3, 60),
        (4, 2, 0),
        (3, 2, 0),
        (2, 1, 0),
        (1, 0, 0),
    ]
    text = ""
    for n_interests, n_avoids, excerpt_chars in layouts:
        text = _render(state, n_interests, n_avoids, excerpt_chars)
        if len(text) <= MAX_SUMMARY_CHARS:
            return text
    return _hard_cut(text)


def _render(state: _ProfileState, n_interests: int, n_avoids: int, excerpt_chars: int) -> str:
    interests, avoids = _ranked_terms(state.weights)
    sentences = [BASELINE_HEADER]
    shown = interests[:n_interests]
    if shown:
        sentences.append("Gravitates to: " + _format_entries(shown) + ".")
    else:
        sentences.append("No clear interests yet.")
    if avoids[:n_avoids]:
        sentences.append("Tends to pass over: " + _format_entries(avoids[:n_avoids]) + ".")
    domains = _ranked(state.domains, positive=True)[:3]
    if domains:
        sentences.append("Mostly engages with " + _format_domains(domains) + ".")
    noun = "interaction" if state.interactions == 1 else "interactions"
    sentences.append(f"Built from {state.interactions} {noun} so far.")
    if state.excerpt and excerpt_chars:
        sentences.append(
            f'Earlier notes from another writer: "{_shorten(state.excerpt, excerpt_chars)}"'
        )
    return " ".join(sentences)


def _ranked_terms(
    weights: dict[str, float],
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    return _ranked(weights, positive=True), _ranked(weights, positive=False)


def _ranked(weights: dict[str, float], *, positive: bool) -> list[tuple[str, float]]:
    """Terms of one sign with a displayable magnitude, strongest first, ties by name."""
    picked = [
        (label, round(abs(w), 1))
        for label, w in weights.items()
        if (w > 0) == positive and round(abs(w), 1) >= MIN_SHOWN_WEIGHT
    ]
    picked.sort(key=lambda item: (-item[1], item[0]))
    return picked


def _format_entries(entries: list[tuple[str, float]]) -> str:
    return ", ".join(f"{label} ({weight:.1f})" for label, weight in entries)


def _format_domains(entries: list[tuple[str, float]]) -> str:
    parts = [f"{label} ({weight:.1f})" for label, weight in entries]
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _hard_cut(text: str) -> str:
    """Last resort: cut at a sentence end that fits (never expected with capped labels)."""
    cut = text[:MAX_SUMMARY_CHARS]
    end = cut.rfind(". ")
    return cut[: end + 1] if end > 0 else cut
