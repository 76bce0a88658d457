"""The live quality signal: every new window scores the previous summary.

AlignXplore+ was trained on one reward, a frozen judge's probability of the user's actual next
choice given the summary (paper §7.1).  The stream sees each user's next choices anyway, so
before a window updates a summary, the judge predicts the window's pairwise choices from that
summary (:mod:`streamer.domain.judge`, the same prompt and protocol as ``streamer eval``): a
free, labelled test of the summary, stored with the new version and carried in its change event.

Cost control: only a sample of windows is scored (``sample_rate``, a deterministic hash of user
and version, so a replay scores the same windows); at most ``max_pairs`` pairs per window; a
no-summary baseline on a smaller sample (``baseline_rate``) measures the lift.  Judge calls run
at a lower priority than updates: one starts only while the model budget has a free slot (else
the window goes unscored, counted), at most ``max_concurrency`` at once.  A judge failure or
timeout leaves the version unscored; it never blocks or fails an update.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas import JudgedPairs, QualityScore, SummaryRecord

from ..domain.judge import JudgeItem, Score, Verdict, age_bucket, aggregate, judge_items
from ..domain.prompt import NOT_PROVIDED
from ..domain.triples import Triple
from ..ports import Judge
from ..settings import QualitySettings, default_of
from ..telemetry import Telemetry

log = logging.getLogger(__name__)


def _Q(name: str) -> Any:  # noqa: N802 - reads as the settings default it is
    return default_of(QualitySettings, name)


@dataclass(frozen=True, slots=True)
class QualityPolicy:
    sample_rate: float = _Q("sample_rate")
    baseline_rate: float = _Q("baseline_rate")
    max_pairs: int = _Q("max_pairs")
    max_concurrency: int = _Q("max_concurrency")
    timeout_s: float = _Q("timeout_s")
    wait_s: float = _Q("wait_s")
    seed: int = _Q("seed")

    @classmethod
    def from_settings(cls, q: QualitySettings) -> QualityPolicy:
        return cls(sample_rate=q.sample_rate, baseline_rate=q.baseline_rate,
                   max_pairs=q.max_pairs, max_concurrency=q.max_concurrency,
                   timeout_s=q.timeout_s, wait_s=q.wait_s, seed=q.seed)


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from ``parts`` (sampling that replays reproduce)."""
    digest = hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _pairs(score: Score) -> JudgedPairs:
    return JudgedPairs(pairs=score.pairs, correct=score.correct, accuracy=score.accuracy,
                       mean_p_correct=min(1.0, max(0.0, score.mean_p_correct)))


@dataclass
class QualityStats:
    scored: int = 0
    unsampled: int = 0
    skipped_busy: int = 0
    failed: int = 0
    late: int = 0
    judge_calls: int = 0
    judge_prompt_tokens: int = 0
    judge_completion_tokens: int = 0


class QualityScorer:
    """Scores a previous summary on the window that follows it (see the module docstring)."""

    def __init__(self, judge: Judge, policy: QualityPolicy | None = None, *,
                 spare_slot: Callable[[], contextlib.AbstractAsyncContextManager[bool]]
                 | None = None,
                 telemetry: Telemetry | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.judge = judge
        self.policy = policy or QualityPolicy()
        self.spare_slot = spare_slot or _always
        self.telemetry = telemetry or Telemetry.noop()
        self.clock = clock
        self.stats = QualityStats()
        self._gate = asyncio.Semaphore(self.policy.max_concurrency)

    def late(self) -> None:
        """A score that was not ready when its version was stored (``wait_s``)."""
        self.stats.late += 1
        self.telemetry.record_quality_outcome("late")

    def sampled(self, user_id: str, version: int) -> bool:
        return _unit(self.policy.seed, "score", user_id, version) < self.policy.sample_rate

    async def score(self, previous: SummaryRecord | None,
                    triples: Sequence[Triple]) -> QualityScore | None:
        """The score of ``previous`` on ``triples``, or None (first version, no pairs, not
        sampled, no free model slot, judge failure): never a fake score, never an exception."""
        if previous is None or not previous.summary.strip() or previous.summary == NOT_PROVIDED:
            return None
        rng = random.Random(_unit(self.policy.seed, "order", previous.user_id, previous.version))
        items = judge_items(previous.summary, triples, rng)[: self.policy.max_pairs]
        if not items:
            return None
        if not self.sampled(previous.user_id, previous.version):
            self.stats.unsampled += 1
            return None
        with_baseline = _unit(self.policy.seed, "baseline", previous.user_id,
                              previous.version) < self.policy.baseline_rate
        try:
            async with self.spare_slot() as free:
                if not free or self._gate.locked():
                    self.stats.skipped_busy += 1  # updates first: this window goes unscored
                    self.telemetry.record_quality_outcome("skipped_busy")
                    return None
                async with self._gate, asyncio.timeout(self.policy.timeout_s):
                    return await self._score(previous, items, with_baseline)
        except Exception as exc:  # noqa: BLE001 - a judge failure never fails the update
            self.stats.failed += 1
            self.telemetry.record_quality_outcome("failed")
            log.warning("quality score of user %s v%d failed (%r); the version is stored "
                        "unscored", previous.user_id, previous.version, exc)
            return None

    async def _score(self, previous: SummaryRecord, items: list[JudgeItem],
                     with_baseline: bool) -> QualityScore:
        blank = [JudgeItem(i.query, "", i.chosen, i.rejected, i.chosen_is_a) for i in items]
        asked = items + (blank if with_baseline else [])
        # one after the other, inside the one model slot this window's judging holds
        verdicts: list[Verdict] = [await self.judge.judge(i) for i in asked]
        summary = aggregate(items, verdicts[: len(items)])
        baseline = aggregate(blank, verdicts[len(items):]) if with_baseline else None
        prompt = sum(v.prompt_tokens for v in verdicts)
        completion = sum(v.completion_tokens for v in verdicts)
        age = max(0.0, (self.clock() - previous.created_at).total_seconds())
        s = self.stats
        s.scored += 1
        s.judge_calls += len(asked)
        s.judge_prompt_tokens += prompt
        s.judge_completion_tokens += completion
        self.telemetry.record_quality(
            accuracy=summary.accuracy, p_correct=summary.mean_p_correct,
            no_summary=baseline.accuracy if baseline else None, age=age_bucket(age),
            judge=self.judge.name, calls=len(asked), prompt_tokens=prompt,
            completion_tokens=completion)
        return QualityScore(
            judge=self.judge.name, scored_version=previous.version, summary_age_s=age,
            summary=_pairs(summary), no_summary=_pairs(baseline) if baseline else None,
            judge_calls=len(asked), judge_prompt_tokens=prompt,
            judge_completion_tokens=completion,
        )


@contextlib.asynccontextmanager
async def _always() -> AsyncIterator[bool]:
    yield True
