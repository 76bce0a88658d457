"""The live quality score: sampling, the judge protocol, the no-summary baseline, priority
below updates, failures that never fail an update, and the score stored and published."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest

from schemas import SummaryRecord, TokenUsage
from streamer.adapters.memory.publish import CollectingPublisher
from streamer.adapters.memory.store import InMemoryProfileStore
from streamer.devtools.fakes import ScriptedSummaryModel
from streamer.domain.judge import JudgeItem, Verdict, aggregate, judge_items
from streamer.domain.triples import NO_NEGATIVE, Triple
from streamer.services.quality import QualityPolicy, QualityScorer
from streamer.services.scheduler import BudgetedModel
from streamer.services.updater import ProfileUpdater
from tests.factories import pairwise

pytestmark = pytest.mark.unit

NOW = datetime(2026, 6, 1, tzinfo=UTC)
TRIPLES = tuple(Triple(f"q{i}", f"liked {i}", f"disliked {i}", f"e{i}") for i in range(5))


def previous(summary: str = "Likes liked things.", version: int = 3) -> SummaryRecord:
    return SummaryRecord(user_id="u1", version=version, previous_version=version - 1 or None,
                         summary=summary, model="m", window_id="w", event_ids=("x",),
                         usage=TokenUsage(prompt_tokens=0, completion_tokens=0), latency_ms=0,
                         created_at=NOW - timedelta(minutes=30))


class OracleJudge:
    """Knows the answer when the summary is non-empty (p_correct 0.9); guesses A without it."""

    name = "oracle-judge"

    def __init__(self) -> None:
        self.asked: list[JudgeItem] = []

    async def judge(self, item: JudgeItem) -> Verdict:
        self.asked.append(item)
        if not item.summary:
            return Verdict("Item A", 0.5, prompt_tokens=90, completion_tokens=6)
        p_a = 0.9 if item.chosen_is_a else 0.1
        return Verdict(item.gold, p_a, prompt_tokens=100, completion_tokens=6)


class FailingJudge:
    name = "broken"

    async def judge(self, item: JudgeItem) -> Verdict:
        raise ConnectionError("judge down")


def scorer(judge, **policy) -> QualityScorer:
    return QualityScorer(judge, QualityPolicy(**policy), clock=lambda: NOW)


# --------------------------------------------------------------------------- domain


def test_judge_items_skip_positive_only_triples_and_draw_the_order_from_the_rng():
    triples = (*TRIPLES, Triple("q", "liked", NO_NEGATIVE, "e9"))
    items = judge_items("S", triples, random.Random(1))
    assert len(items) == 5 and {i.chosen for i in items} == {t.chosen for t in TRIPLES}
    again = judge_items("S", triples, random.Random(1))
    assert [i.chosen_is_a for i in items] == [i.chosen_is_a for i in again]
    assert len({i.chosen_is_a for i in judge_items("S", TRIPLES * 4, random.Random(2))}) == 2


def test_p_correct_is_the_papers_reward():
    item_a = JudgeItem("q", "s", "c", "r", chosen_is_a=True)
    item_b = JudgeItem("q", "s", "c", "r", chosen_is_a=False)
    assert Verdict("Item A", 0.8).p_correct(item_a) == pytest.approx(0.8)
    assert Verdict("Item A", 0.8).p_correct(item_b) == pytest.approx(0.2)
    assert Verdict(None, None).p_correct(item_a) == 0.0  # no letter found: 0
    score = aggregate([item_a, item_b], [Verdict("Item A", 0.8), Verdict("Item A", 0.8)])
    assert (score.pairs, score.correct, score.accuracy) == (2, 1, 0.5)
    assert score.mean_p_correct == pytest.approx(0.5)


# --------------------------------------------------------------------------- scorer


async def test_scores_the_previous_summary_on_the_windows_pairs():
    judge = OracleJudge()
    score = await scorer(judge, baseline_rate=0.0).score(previous(), TRIPLES)
    assert score is not None
    assert (score.judge, score.scored_version, score.summary_age_s) == ("oracle-judge", 3, 1800)
    assert (score.summary.pairs, score.summary.correct, score.summary.accuracy) == (5, 5, 1.0)
    assert score.summary.mean_p_correct == pytest.approx(0.9)
    assert score.no_summary is None and score.judge_calls == 5
    assert (score.judge_prompt_tokens, score.judge_completion_tokens) == (500, 30)
    assert all(i.summary == "Likes liked things." for i in judge.asked)


async def test_no_summary_baseline_on_its_sample_gives_the_lift():
    judge = OracleJudge()
    score = await scorer(judge, baseline_rate=1.0).score(previous(), TRIPLES)
    assert score.no_summary is not None and score.no_summary.pairs == 5
    assert score.judge_calls == 10 and sum(not i.summary for i in judge.asked) == 5
    assert score.summary.accuracy - score.no_summary.accuracy > 0


async def test_no_score_for_first_versions_empty_summaries_or_windows_without_pairs():
    s = scorer(OracleJudge())
    assert await s.score(None, TRIPLES) is None
    assert await s.score(previous("Not Provided."), TRIPLES) is None
    assert await s.score(previous("  "), TRIPLES) is None
    assert await s.score(previous(), (Triple("q", "x", NO_NEGATIVE, "e"),)) is None
    assert s.stats.scored == 0


async def test_max_pairs_caps_the_judge_calls():
    judge = OracleJudge()
    score = await scorer(judge, max_pairs=2, baseline_rate=0.0).score(previous(), TRIPLES)
    assert score.summary.pairs == 2 and len(judge.asked) == 2


def test_sampling_is_deterministic_per_user_and_version():
    s = scorer(OracleJudge(), sample_rate=0.5)
    picks = [s.sampled(f"u{i}", v) for i in range(200) for v in (1, 2)]
    assert picks == [s.sampled(f"u{i}", v) for i in range(200) for v in (1, 2)]
    assert 0.35 < sum(picks) / len(picks) < 0.65
    assert not any(scorer(OracleJudge(), sample_rate=0.0).sampled(f"u{i}", 1) for i in range(50))


async def test_unsampled_windows_are_counted_not_judged():
    judge = OracleJudge()
    s = scorer(judge, sample_rate=0.0)
    assert await s.score(previous(), TRIPLES) is None
    assert s.stats.unsampled == 1 and not judge.asked


async def test_judge_failure_or_timeout_leaves_the_version_unscored():
    s = scorer(FailingJudge())
    assert await s.score(previous(), TRIPLES) is None and s.stats.failed == 1

    class Slow(OracleJudge):
        async def judge(self, item):
            await asyncio.sleep(5)

    slow = scorer(Slow(), timeout_s=0.01)
    assert await slow.score(previous(), TRIPLES) is None and slow.stats.failed == 1


async def test_judging_waits_for_no_one_it_only_takes_a_spare_model_slot():
    budget = BudgetedModel(ScriptedSummaryModel([]), slots=1)
    judge = OracleJudge()
    s = QualityScorer(judge, QualityPolicy(), spare_slot=budget.spare_slot, clock=lambda: NOW)
    async with budget.spare_slot() as got:  # an update holds the only slot
        assert got
        assert await s.score(previous(), TRIPLES) is None
    assert s.stats.skipped_busy == 1 and not judge.asked
    assert await s.score(previous(), TRIPLES) is not None  # the slot is free again
    assert budget.in_flight == 0


# --------------------------------------------------------------------------- in the updater


REPLY = "<think>\nthinking\n</think>\n\nLikes sci-fi."


async def test_updater_stores_and_publishes_the_score_with_the_next_version():
    store, pub = InMemoryProfileStore(), CollectingPublisher()
    judge = OracleJudge()
    updater = ProfileUpdater(store, ScriptedSummaryModel([REPLY, REPLY]), pub,
                             scorer=scorer(judge, baseline_rate=0.0))
    first = [pairwise(f"a{i}") for i in range(3)]
    second = [pairwise(f"b{i}") for i in range(3)]
    r1 = await updater.apply("u1", first)
    r2 = await updater.apply("u1", second)
    assert r1.record.quality is None  # a first version has no previous summary to score
    q = r2.record.quality
    assert q is not None and q.scored_version == 1 and q.summary.pairs == 3
    assert {i.summary for i in judge.asked} == {r1.record.summary}
    assert [c.quality for c in pub.events] == [None, q]
    assert (await store.get_current("u1")).quality == q


async def test_a_failing_judge_never_fails_the_update():
    store, pub = InMemoryProfileStore(), CollectingPublisher()
    updater = ProfileUpdater(store, ScriptedSummaryModel([REPLY, REPLY]), pub,
                             scorer=scorer(FailingJudge()))
    await updater.apply("u1", [pairwise("a0")])
    result = await updater.apply("u1", [pairwise("b0")])
    assert result.record.version == 2 and result.record.quality is None



async def test_a_slow_judge_holds_the_update_back_at_most_wait_s():
    class Slow(OracleJudge):
        async def judge(self, item):
            await asyncio.sleep(30)

    store, pub = InMemoryProfileStore(), CollectingPublisher()
    s = scorer(Slow(), wait_s=0.05, timeout_s=60)
    updater = ProfileUpdater(store, ScriptedSummaryModel([REPLY, REPLY]), pub, scorer=s)
    await updater.apply("u1", [pairwise("a0")])
    result = await asyncio.wait_for(updater.apply("u1", [pairwise("b0")]), 5)
    assert result.record.version == 2 and result.record.quality is None
    assert s.stats.late == 1
