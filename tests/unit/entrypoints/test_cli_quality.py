"""`streamer quality` and `streamer export-training` against a SQLite store file: the report
(text, JSON, cohort options, plots or the install hint), the training lines, exit codes."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from schemas import JudgedPairs, QualityScore, SummaryRecord, TokenUsage, WindowTriple
from streamer.adapters.sqlite.store import SqliteProfileStore
from streamer.entrypoints.cli import EX_FAILED, cli

pytestmark = pytest.mark.unit

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
WINDOW = (WindowTriple(query="q1", chosen="jazz night", rejected="metal fest"),
          WindowTriple(query="q2", chosen="blues bar", rejected="techno club"))


def score(correct: int, p: float, *, scored: int, age: float, baseline: int | None = None,
          judge: str = "qwen3-8b") -> QualityScore:
    return QualityScore(
        judge=judge, scored_version=scored, summary_age_s=age,
        summary=JudgedPairs(pairs=2, correct=correct, accuracy=correct / 2, mean_p_correct=p),
        no_summary=None if baseline is None else JudgedPairs(
            pairs=2, correct=baseline, accuracy=baseline / 2, mean_p_correct=0.5),
        judge_calls=4 if baseline is not None else 2, judge_prompt_tokens=300,
        judge_completion_tokens=12)


def record(user: str, version: int, at: datetime, quality: QualityScore | None = None,
           triples: tuple[WindowTriple, ...] = WINDOW) -> SummaryRecord:
    return SummaryRecord(
        user_id=user, version=version, previous_version=version - 1 or None,
        summary=f"{user} likes v{version}", model="alignxplore", window_id=f"{user}-w{version}",
        event_ids=(f"{user}-e{version}",), usage=TokenUsage(prompt_tokens=9, completion_tokens=3),
        latency_ms=2.0, created_at=at, quality=quality, triples=triples)


FIXTURE = [
    record("alice", 1, T0),
    record("alice", 2, T0 + timedelta(hours=2), score(2, 0.8, scored=1, age=7200, baseline=1)),
    record("alice", 3, T0 + timedelta(days=1), score(1, 0.6, scored=2, age=79200)),
    record("bob", 1, T0),
    record("bob", 2, T0 + timedelta(minutes=30), score(1, 0.5, scored=1, age=30, judge="other"),
           triples=()),
]


def store_file(path, records) -> str:
    async def fill() -> None:
        store = SqliteProfileStore(path)
        try:
            for r in records:
                await store.append(r)
        finally:
            await store.aclose()

    asyncio.run(fill())
    return str(path)


@pytest.fixture
def env(tmp_path):
    return {"STREAMER_STORE": "sqlite",
            "STREAMER_SQLITE_PATH": store_file(tmp_path / "store.sqlite3", FIXTURE)}


def run(env, *args):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_quality_prints_the_tables(env):
    result = run(env, "quality", "--no-progress")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("quality of 3 scored windows (5 versions in the cohort, 5 scanned")
    lines = out.splitlines()
    assert lines[lines.index("overall") + 3].split() == [
        "all", "3", "6", "0.667", "0.633", "1", "1.000", "0.500", "+0.500"]
    assert "lift of the summary: +0.500 accuracy" in out
    over_time = lines[lines.index("accuracy over time (by day, UTC)") + 3:][:2]
    assert [row.split()[:4] for row in over_time] == [["2026-06-01", "2", "4", "0.750"],
                                                      ["2026-06-02", "1", "2", "0.500"]]
    assert "judge cost" in lines


def test_quality_json_with_cohort_options(env):
    result = run(env, "quality", "--no-progress", "--json", "--user", "alice", "--bucket", "hour",
                 "--since", "2026-06-01T13:00", "--until", "2026-06-02T12:00:00+00:00")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["cohort"] == {"users": ["alice"], "since": "2026-06-01T13:00:00+00:00",
                             "until": "2026-06-02T12:00:00+00:00"}
    assert doc["scored_windows"] == 1 and doc["overall"]["accuracy"] == 1.0
    assert [r["label"] for r in doc["over_time"]["rows"]] == ["2026-06-01T14:00Z"]
    assert run(env, "quality", "--no-progress", "--json", "--judge", "other",
               "--user-prefix", "b").exit_code == 0
    assert run(env, "quality", "--since", "yesterday").exit_code == 2


def test_quality_without_scores_or_versions_exits_1(env, tmp_path):
    result = run(env, "quality", "--no-progress", "--model", "nobody")
    assert result.exit_code == EX_FAILED
    assert "no scored version among the 0 versions of the cohort (5 scanned)" in result.stderr
    empty = {"STREAMER_STORE": "sqlite",
             "STREAMER_SQLITE_PATH": store_file(tmp_path / "empty.sqlite3", [])}
    result = run(empty, "quality", "--no-progress")
    assert result.exit_code == EX_FAILED and "holds no summary versions" in result.stderr


def test_quality_plots_or_the_install_hint(env, tmp_path, monkeypatch):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        installed = False
    else:
        installed = True
    if installed:
        result = run(env, "quality", "--no-progress", "--plots", str(tmp_path / "plots"))
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
            "quality-by-age.png", "quality-by-window-size.png", "quality-over-time.png"]
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as without the bench extra
    result = run(env, "quality", "--no-progress", "--plots", str(tmp_path / "none"))
    assert result.exit_code == 0
    assert "matplotlib is not installed" in result.stderr
    assert "pip install -e '.[bench]'" in result.stderr
    assert result.stdout.startswith("quality of 3 scored windows")  # the tables all the same


def test_export_training_writes_one_line_per_version_with_a_previous_one(env, tmp_path):
    out = tmp_path / "train.jsonl"
    result = run(env, "export-training", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    assert "wrote 2 training records to" in result.stdout
    assert "skipped: no triples 1" in result.stderr
    assert "STREAMER_QUALITY__KEEP_TRIPLES=true" in result.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["user_id"], x["version"]) for x in lines] == [("alice", 2), ("alice", 3)]
    assert lines[0]["previous_summary"] == "alice likes v1"
    assert lines[0]["summary"] == "alice likes v2"
    assert lines[0]["triples"][0] == {"query": "q1", "chosen": "jazz night",
                                      "rejected": "metal fest"}
    assert lines[0]["score"]["summary"]["mean_p_correct"] == 0.8
    assert lines[0]["next_score"]["summary"]["mean_p_correct"] == 0.6
    assert lines[1]["next_score"] is None
    assert not (tmp_path / "train.jsonl.partial").exists()


def test_export_training_filters_and_nothing_written_exits_1(env, tmp_path):
    out = tmp_path / "a.jsonl"
    result = run(env, "export-training", str(out), "--no-progress", "--user", "alice",
                 "--since", "2026-06-02", "--scored-only", "--min-pairs", "2")
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["version"] for x in out.read_text().splitlines()] == [3]
    none = tmp_path / "none.jsonl"
    result = run(env, "export-training", str(none), "--no-progress", "--min-pairs", "3")
    assert result.exit_code == EX_FAILED
    assert "no training record written (5 versions scanned)" in result.stderr
    assert "too few pairs 2" in result.stderr
    assert not none.exists() and not (tmp_path / "none.jsonl.partial").exists()
