"""`streamer eval` pipeline over real HTTP: stand-in summarizer and stand-in judge."""

import json
import subprocess
import sys

import httpx

from streamer.adapters.llm.baseline import BaselineSummaryModel
from streamer.adapters.llm.client import OpenAICompatSummaryModel
from streamer.adapters.llm.judge import PoolJudge
from streamer.app import eval_updater
from streamer.devtools.standin.server import StandinConfig, running_standin
from streamer.domain.judge import JUDGE_SYSTEM
from streamer.evaluation.benchmark import BUNDLED_SYNTHETIC, evaluate, load_benchmark
from streamer.settings import Settings
from tests.e2e.harness import ROOT


async def test_eval_runs_both_stages_and_judges_every_user():
    records = load_benchmark(BUNDLED_SYNTHETIC)[:10]
    async with running_standin(StandinConfig(model="Qwen/Qwen3-8B")) as judge, \
            running_standin() as summarizer:
        model = OpenAICompatSummaryModel([f"{summarizer}/v1"], model="VanillaH1/AlignXplore-Plus",
                                         health_interval_s=None)
        judge_pool = PoolJudge(OpenAICompatSummaryModel([f"{judge}/v1"], model="Qwen/Qwen3-8B",
                                                        health_interval_s=None))
        report = await evaluate(records, updater=eval_updater(Settings(), model),
                                judge=judge_pool, dataset="synthetic")
        await model.aclose()
        await judge_pool.aclose()
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"{summarizer}/admin/stats")).json()
            last = (await client.get(f"{judge}/admin/last")).json()
    assert report.users == 10 and report.unparsed == 0 and report.failed_summaries == 0
    assert 0.0 <= report.accuracy <= 1.0 and report.auc is not None
    assert sum(n for k, n in stats["by_endpoint"].items() if "chat" in k) == 20  # 2 stages/user
    assert last["messages"][0]["content"] == JUDGE_SYSTEM  # the reference judge prompt
    assert "<Preference>\n" in last["messages"][1]["content"]
    gold = [r["gold"] for r in report.rows]
    assert {"Item A", "Item B"} >= set(gold)


async def test_same_seed_same_questions_and_answers():
    records = load_benchmark(BUNDLED_SYNTHETIC)[:6]
    async with running_standin(StandinConfig(model="j")) as judge:
        judge_pool = PoolJudge(OpenAICompatSummaryModel([f"{judge}/v1"], model="j",
                                                        health_interval_s=None))
        runs = [
            await evaluate(records, updater=eval_updater(Settings(), BaselineSummaryModel()),
                           judge=judge_pool, dataset="synthetic", seed=seed)
            for seed in (42, 42, 7)
        ]
        await judge_pool.aclose()
    orders = [[r["chosen_is_a"] for r in run.rows] for run in runs]
    assert orders[0] == orders[1] and [r["selection"] for r in runs[0].rows] == [
        r["selection"] for r in runs[1].rows]
    assert orders[0] != orders[2]  # the A/B order comes from the seed


def test_bundled_synthetic_set_is_what_the_generator_makes(tmp_path):
    out = tmp_path / "synthetic.jsonl"
    proc = subprocess.run([sys.executable, "-m", "streamer", "eval", "--make-synthetic", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == BUNDLED_SYNTHETIC.read_text()
    first = json.loads(BUNDLED_SYNTHETIC.read_text().splitlines()[0])
    assert set(first) == {"userid", "history", "target"} and len(first["history"]) >= 4
