"""The AlignXplore+ downstream pairwise judgement (paper protocol, §6 of the reference).

A judge model reads a user's preference summary and picks which of two responses the user
prefers.  Prompt, parsing and metrics follow ``evaluate_select.py`` / ``evaluate_rec_pair.py``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

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
        user = (
            f"{JUDGE_INSTRUCTION}<Prompt>\n{self.query}\n</Prompt>\n\n"
            f"<Preference>\n{self.summary}</Preference>\n\n"
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


def prob_a(top_tokens: Sequence[Sequence[tuple[str, float]]] | None) -> float:
    """P(letter ``A``) from per-token (token, logprob) alternatives; 1 - P(``B``) if only B is
    seen; 0.5 when neither letter appears (the reference's default)."""
    for alternatives in top_tokens or ():
        for token, logprob in alternatives:
            if token.strip() == "A":
                return math.exp(logprob)
            if token.strip() == "B":
                return 1.0 - math.exp(logprob)
    return 0.5


def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties count half); None with one class only."""
    pos = [s for y, s in zip(labels, scores, strict=True) if y]
    neg = [s for y, s in zip(labels, scores, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def stage_chunks(history: Sequence[object], dataset: str) -> tuple[list[object], list[object]]:
    """The paper's two streaming stages: recommendation sets (file names starting ``amazon``,
    ``mind`` or ``movielens``) use thirds and drop the last one; others use halves."""
    n = len(history)
    if dataset.split("_", 1)[0].lower() in {"amazon", "mind", "movielens"}:
        k = n // 3
        return list(history[:k]), list(history[k : 2 * k])
    k = n // 2
    return list(history[:k]), list(history[k:])
