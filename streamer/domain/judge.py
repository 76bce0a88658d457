"""The AlignXplore+ pairwise judgement (paper §6.1–6.2, reward §7.1): one implementation for the
offline evaluation (``streamer eval``) and the online quality score of every window.

A judge model reads a preference summary and picks which of two items the user prefers.  Pure:
the prompt, the parsing, the probability of the correct choice, and the aggregate score.  The
calls themselves are adapters (:mod:`streamer.adapters.llm.judge`).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .safety import neutralize
from .triples import NO_NEGATIVE, Triple

JUDGE_SYSTEM = "Generate a task-specific response."

JUDGE_INSTRUCTION = (
    "Determine which response the user prefers based on the user's preferences. Please output "
    "your selection below in a json format by filling in the placeholders in []:"
    '{"selection": "[Item A / Item B]"}\n'
)
JUDGE_CLOSING = (
    "Now, ONLY output your selection without any other text outside of this specified structure."
)
_JSON_RE = re.compile(r"\{.*\}", re.DOTALL)


@dataclass(frozen=True, slots=True)
class JudgeItem:
    """One pairwise question: ``chosen_is_a`` is the gold (A/B order drawn by the caller)."""

    query: str
    summary: str
    chosen: str
    rejected: str
    chosen_is_a: bool

    @property
    def gold(self) -> str:
        return "Item A" if self.chosen_is_a else "Item B"

    def messages(self) -> list[dict[str, str]]:
        a, b = (self.chosen, self.rejected) if self.chosen_is_a else (self.rejected, self.chosen)
        a, b = neutralize(a), neutralize(b)  # text from outside never acts as a control token
        user = (
            f"{JUDGE_INSTRUCTION}<Prompt>\n{neutralize(self.query)}\n</Prompt>\n\n"
            f"<Preference>\n{neutralize(self.summary)}</Preference>\n\n"
            f"<Item A>\n{a}\n</Item A>\n\n<Item B>\n{b}\n</Item B>\n\n{JUDGE_CLOSING}"
        )
        return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def parse_selection(text: str) -> str | None:
    """``Item A`` / ``Item B`` from a judge reply, or None (counted as wrong)."""
    if "assistantfinal" in text:
        text = text.split("assistantfinal")[-1]
    if "</think>" in text:
        text = text.split("</think>")[-1]
    text = text.strip()
    for candidate in (text, *(m.group(0) for m in [_JSON_RE.search(text)] if m)):
        try:
            value = json.loads(candidate)
        except (ValueError, TypeError):
            continue
        if isinstance(value, dict) and isinstance(value.get("selection"), str):
            selection = value["selection"].strip()
            return selection if selection in ("Item A", "Item B") else None
    return None


def letter_p_a(top_tokens: Sequence[Sequence[tuple[str, float]]] | None) -> float | None:
    """P(letter ``A``) from per-token (token, logprob) alternatives: the first token that is a
    letter decides (1 - P(``B``) when it is B); None when neither letter appears."""
    for alternatives in top_tokens or ():
        for token, logprob in alternatives:
            if token.strip() == "A":
                return math.exp(logprob)
            if token.strip() == "B":
                return 1.0 - math.exp(logprob)
    return None


def prob_a(top_tokens: Sequence[Sequence[tuple[str, float]]] | None) -> float:
    """:func:`letter_p_a`, 0.5 when neither letter appears (the reference's AUC default)."""
    p = letter_p_a(top_tokens)
    return 0.5 if p is None else p


@dataclass(frozen=True, slots=True)
class Verdict:
    """A judge's answer to one :class:`JudgeItem`: its selection (None when unparsed) and
    P(letter ``A``) from the logprobs (None when neither letter appears)."""

    selection: str | None
    p_a: float | None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def correct(self, item: JudgeItem) -> bool:
        return self.selection == item.gold

    def p_correct(self, item: JudgeItem) -> float:
        """The paper's reward: the judge's probability of the correct letter (1 - P(A) when B
        is correct); 0 when no letter was found at all."""
        if self.p_a is None:
            return 0.0
        return self.p_a if item.chosen_is_a else 1.0 - self.p_a


def judge_items(summary: str, triples: Sequence[Triple], rng: random.Random) -> list[JudgeItem]:
    """One pairwise question per triple that has a real rejected item (positive-only ones, "No
    negative sample.", ask nothing), the A/B order drawn from ``rng`` (1 = chosen is A, as
    ``random.randint(0, 1)`` in the reference).  ``summary`` "" is the no-summary baseline."""
    return [JudgeItem(query=t.query, summary=summary, chosen=t.chosen, rejected=t.rejected,
                      chosen_is_a=rng.randint(0, 1) == 1)
            for t in triples if t.rejected != NO_NEGATIVE]


@dataclass(frozen=True, slots=True)
class Score:
    """Aggregate of one set of judged pairs."""

    pairs: int
    correct: int
    mean_p_correct: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.pairs if self.pairs else 0.0


def aggregate(items: Sequence[JudgeItem], verdicts: Sequence[Verdict]) -> Score:
    if len(items) != len(verdicts):
        raise ValueError("one verdict per item")
    n = len(items)
    correct = sum(v.correct(i) for i, v in zip(items, verdicts, strict=True))
    mean = sum(v.p_correct(i) for i, v in zip(items, verdicts, strict=True)) / n if n else 0.0
    return Score(pairs=n, correct=correct, mean_p_correct=mean)


AGE_BUCKETS: tuple[tuple[float, str], ...] = (
    (60, "<1m"), (3600, "<1h"), (86400, "<1d"), (7 * 86400, "<1w"), (math.inf, ">=1w"))
"""Summary-age buckets of the quality score (metrics label and ``streamer quality`` rows)."""


def age_bucket(age_s: float) -> str:
    """The :data:`AGE_BUCKETS` label of a summary age (low cardinality, for metrics)."""
    for bound, label in AGE_BUCKETS:
        if age_s < bound:
            return label
    return AGE_BUCKETS[-1][1]
