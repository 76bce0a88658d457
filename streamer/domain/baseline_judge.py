"""A CPU *baseline* pairwise judge: term overlap, NOT a language model (and not the paper's judge).

Given a preference summary and two items, :func:`baseline_p_a` returns P(the user prefers item
A). Items are parsed with the baseline summarizer's own per-domain parsing
(:func:`streamer.domain.baseline.item_features`): categories (movie genres, product
categories, the lexicon topic of a news or book item) are strong features, title and body words
weak ones. Each feature is looked up in the summary:

- a baseline summary (:mod:`streamer.domain.baseline`) is read back into its signed weights
  (liked / "sometimes" / "lately more into" > 0, passed over < 0, by rank); a category liked in
  another domain counts at half weight (sci-fi books say something about sci-fi films);
- any other text (free prose from a real model, or the excerpt a baseline summary carries) is
  split into clauses; in a clause, the words after a negative cue (``dislikes``, ``skips``,
  ``not``, ``no longer``, ...) count against an item, the others for it (plain word overlap,
  plus the topic lexicon, so that "politics" in the prose matches a news item about a
  legislature).

The score difference goes through a logistic. Nothing known about either item (an empty
summary, i.e. the no-summary baseline, included) gives exactly 0.5. Pure and deterministic.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache

from .baseline import (
    TITLE_WEIGHT,
    TOPIC_LEXICON,
    ItemFeatures,
    is_baseline_summary,
    item_features,
    recover_state,
    stem,
    tokens,
    topic_scores,
)

__all__ = ["BASELINE_JUDGE_NAME", "baseline_p_a"]

BASELINE_JUDGE_NAME = "baseline-judge (term overlap, not a language model)"
"""How scores of this judge are labelled (never the name of a real judge model)."""

TEMPERATURE = 2.0
"""Score difference (in liked-category units of the summary) per logit."""
CROSS_DOMAIN = 0.5
"""A category the summary states for another domain counts this much."""
WORD_FACTOR = 0.5
"""Weight of word matches relative to category matches."""
PROSE_CATEGORY = 2.0
"""Weight of a category named (or implied via the topic lexicon) in free prose."""
EXCERPT_FACTOR = 0.5
"""Weight of the foreign excerpt a baseline summary carries, relative to plain prose."""

_NEGATIVE_CUES = frozenset(
    """
    not no never nor dislike dislikes disliked avoid avoids avoided avoiding skip skips skipped
    skipping hate hates hated pass passes passed rarely less without don't doesn't isn't won't
    aren't bored tired uninterested against
    """.split()
)
_CUE_STEMS = frozenset(stem(c) for c in _NEGATIVE_CUES)
_CLAUSE_RE = re.compile(r"[.;!?\n]+|,?\s+but\s+|\s+whereas\s+|\s+while\s+", re.IGNORECASE)
_RAW_WORD_RE = re.compile(r"[^\W\d_][\w'\u2019-]*")
_THINK_CLOSE = "</think>"


@dataclass(slots=True)
class _Preferences:
    """Signed evidence read from a summary, keyed by stemmed labels and words."""

    categories: dict[tuple[str, str], float] = field(default_factory=dict)
    labels: dict[str, float] = field(default_factory=dict)  # any domain
    words: dict[str, float] = field(default_factory=dict)

    def empty(self) -> bool:
        return not (self.categories or self.labels or self.words)


def baseline_p_a(summary: str, item_a: str, item_b: str) -> float:
    """P(the user described by ``summary`` prefers ``item_a`` over ``item_b``), in [0, 1].

    Symmetric: ``baseline_p_a(s, a, b) == 1 - baseline_p_a(s, b, a)`` (up to rounding).
    """
    prefs = _preferences(summary or "")
    if prefs.empty():
        return 0.5
    diff = _score(prefs, item_features(item_a)) - _score(prefs, item_features(item_b))
    if diff == 0.0:
        return 0.5
    x = max(-60.0, min(60.0, diff / TEMPERATURE))
    return 1.0 / (1.0 + math.exp(-x))


def _score(prefs: _Preferences, item: ItemFeatures) -> float:
    score = 0.0
    for label in item.categories:
        key = stem(label)
        weight = prefs.categories.get((item.domain or "items", key))
        if weight is None:
            cross = prefs.labels.get(key, 0.0)
            weight = cross * (CROSS_DOMAIN if prefs.categories else 1.0)
        score += weight
    for word, weight in item.words.items():
        key = stem(word)
        if key in prefs.words:
            score += WORD_FACTOR * (weight / TITLE_WEIGHT) * prefs.words[key]
    return score


@lru_cache(maxsize=4096)
def _preferences(summary: str) -> _Preferences:
    text = summary.strip()
    if not text:
        return _Preferences()
    if is_baseline_summary(text):
        state = recover_state(text)
        prefs = _Preferences()
        for (domain, label), weight in state.categories.items():
            key = stem(label)
            prefs.categories[(domain, key)] = prefs.categories.get((domain, key), 0.0) + weight
            prefs.labels[key] = prefs.labels.get(key, 0.0) + weight
        for word, weight in state.words.items():
            key = stem(word)
            prefs.words[key] = prefs.words.get(key, 0.0) + weight
        if state.excerpt:
            _add_prose(prefs, state.excerpt, EXCERPT_FACTOR)
        return prefs
    prefs = _Preferences()
    _add_prose(prefs, text, 1.0)
    return prefs


def _add_prose(prefs: _Preferences, text: str, factor: float) -> None:
    """Clause-level word overlap: what follows a negative cue counts against, the rest for."""
    if _THINK_CLOSE in text:
        text = text.split(_THINK_CLOSE)[-1]
    for clause in _CLAUSE_RE.split(text):
        raw = [w.casefold().replace("\u2019", "'") for w in _RAW_WORD_RE.findall(clause)]
        cue = next((i for i, w in enumerate(raw) if w in _NEGATIVE_CUES), len(raw))
        for part, sign in ((raw[:cue], 1.0), (raw[cue:], -1.0)):
            if part:
                _add_words(prefs, " ".join(part), sign * factor)


def _add_words(prefs: _Preferences, text: str, weight: float) -> None:
    words = {stem(w) for w in tokens(text)} - _CUE_STEMS
    for word in words:
        prefs.words[word] = prefs.words.get(word, 0.0) + weight
        prefs.labels[word] = prefs.labels.get(word, 0.0) + weight * PROSE_CATEGORY
    for domain in TOPIC_LEXICON:
        for topic in topic_scores(domain, [text]):
            key = stem(topic)
            if key not in words:
                prefs.labels[key] = prefs.labels.get(key, 0.0) + weight * PROSE_CATEGORY
