"""The composition root's choices that are not plain wiring: which judge scores the summaries."""

from __future__ import annotations

import pytest

from streamer.adapters.llm.client import OpenAICompatSummaryModel
from streamer.adapters.llm.judge import BaselineJudge, PoolJudge
from streamer.app import baseline_model, build_judge
from streamer.devtools.fakes import ScriptedSummaryModel
from streamer.settings import Settings

pytestmark = pytest.mark.unit


def settings(**quality) -> Settings:
    return Settings(quality=quality)


async def test_the_judge_is_the_model_pool_itself_by_default():
    pool = OpenAICompatSummaryModel(["http://vllm:8000/v1"], model="VanillaH1/AlignXplore-Plus")
    try:
        judge = build_judge(settings(), pool)
        assert isinstance(judge, PoolJudge) and judge.pool is pool
        assert judge.name == "VanillaH1/AlignXplore-Plus"
        assert build_judge(settings(sample_rate=0.0), pool) is None  # scoring off
    finally:
        await pool.aclose()


async def test_a_separate_judge_pool_or_model():
    pool = OpenAICompatSummaryModel(["http://vllm:8000/v1"], model="VanillaH1/AlignXplore-Plus")
    other = build_judge(settings(judge_urls=["http://judge:8000/v1"], judge_model="Qwen/Qwen3-8B",
                                 judge_extra_body={"seed": 1}), pool)
    same_servers = build_judge(settings(judge_model="Qwen/Qwen3-8B"), pool)
    try:
        assert isinstance(other, PoolJudge) and other.pool is not pool
        assert other.name == "Qwen/Qwen3-8B" and other.extra["seed"] == 1
        assert [e.base_url for e in other.pool.endpoints] == ["http://judge:8000/v1"]
        assert other.pool.extra_body == {}  # the summarizer's extra_body is not the judge's
        assert [e.base_url for e in same_servers.pool.endpoints] == ["http://vllm:8000/v1"]
    finally:
        for p in (pool, other.pool, same_servers.pool):
            await p.aclose()


def test_baseline_judge_for_the_demo_and_when_asked_none_for_an_in_process_engine():
    assert isinstance(build_judge(settings(), baseline_model()), BaselineJudge)
    assert isinstance(build_judge(settings(judge_model="baseline"),
                                  ScriptedSummaryModel([])), BaselineJudge)
    assert build_judge(settings(), ScriptedSummaryModel([])) is None  # no pool to judge with
