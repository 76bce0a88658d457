"""Offline evaluation metrics and staging (paper §5–6).  The judge itself (prompt, parsing,
probabilities) is :mod:`streamer.domain.judge`, shared with the online quality score."""

from __future__ import annotations

from collections.abc import Sequence


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
