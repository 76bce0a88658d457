"""`streamer plan`: the table, its JSON form, settings-backed options, the bench file, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamer.domain.capacity import DEFAULT_BENCH
from streamer.entrypoints.cli import EX_USAGE, cli, main

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ["plan", "--users", "10000000", "--events-per-user-day", "20", "--window-max-age", "900",
           "--reasoning-tokens", "512", "--gpu", "h100"]


def run(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def as_json(*args, env=None) -> dict:
    result = run(*args, "--json", env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_the_worked_example_prints_every_quantity_with_its_formula():
    result = run(*EXAMPLE, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("capacity plan: 10,000,000 users × 20 events/user-day")
    assert "quantity" in out and "value" in out and "formula" in out
    for section in ("load", "model", "gpu", "workers", "kafka", "buffer", "cassandra",
                    "freshness"):
        assert f"-- {section} --" in out
    for quantity in ("model calls per day", "GPUs (H100 SXM5 80GB)", "stream workers",
                     "input topic partitions", "input topic on disk (retention)",
                     "pending index memory", "Cassandra on disk (all tables)",
                     "freshness p50", "freshness p99"):
        assert quantity in out
    assert "users × events/user-day = 10,000,000 × 20" in out
    assert max(map(len, out.splitlines())) <= 200  # formulas wrap at the terminal width
    assert "warning: STREAMER_MODEL__MAX_CONCURRENCY=16" in out
    assert "sources:\n  gpu: NVIDIA H100" in out and "TensorRT-LLM" in out


def test_json_output_parses_and_matches_the_table():
    doc = as_json(*EXAMPLE)
    rows = {r["key"]: r for r in doc["rows"]}
    assert rows["calls_per_day"]["value"] == pytest.approx(165_517_241, rel=1e-3)
    assert all(r["formula"] and r["unit"] for r in doc["rows"])
    assert doc["inputs"]["gpu"] == "h100" and doc["inputs"]["window_max_age_s"] == 900
    assert doc["inputs"]["bench"]["source"] == DEFAULT_BENCH.source
    assert doc["warnings"]


def test_settings_back_the_window_and_model_options():
    params = cli.commands["plan"].make_context("plan", EXAMPLE[1:]).params
    assert params["window_max_events"] is None  # STREAMER_WINDOW__MAX_EVENTS
    unset = cli.commands["plan"].make_context("plan", EXAMPLE[1:5] + EXAMPLE[7:]).params
    assert unset["window_max_age_s"] is None  # STREAMER_WINDOW__MAX_AGE_S
    env = {"STREAMER_WINDOW__MAX_EVENTS": "4", "STREAMER_WINDOW__MAX_AGE_S": "60",
           "STREAMER_MODEL__MAX_CONCURRENCY": "100000"}
    doc = as_json(*EXAMPLE[:5], *EXAMPLE[7:], env=env)
    assert doc["inputs"]["window_max_events"] == 4 and doc["inputs"]["window_max_age_s"] == 60
    assert doc["inputs"]["model_max_concurrency"] == 100000
    assert not any("MAX_CONCURRENCY=" in w for w in doc["warnings"])
    given = as_json(*EXAMPLE, "--window-max-events", "2", env=env)
    assert given["inputs"]["window_max_events"] == 2 and given["inputs"]["window_max_age_s"] == 900


def test_knobs_change_the_plan():
    base = {r["key"]: r["value"] for r in as_json(*EXAMPLE)["rows"]}
    tuned = {r["key"]: r["value"] for r in as_json(
        *EXAMPLE, "--active-hours", "2", "--target-utilisation", "0.5", "--kafka-replication",
        "1", "--history-days", "30")["rows"]}
    assert tuned["calls_per_day"] < base["calls_per_day"]
    assert tuned["kafka_retention_bytes"] == pytest.approx(base["kafka_retention_bytes"] / 3)
    assert tuned["cassandra_history_bytes"] < base["cassandra_history_bytes"]


def test_a_bench_file_replaces_the_ratios(tmp_path):
    doc = as_json(*EXAMPLE, "--bench", str(ROOT / "bench" / "results" / "quick.json"))
    bench = doc["inputs"]["bench"]
    assert "quick.json" in bench["source"]
    assert bench["ingest_events_per_s"] != DEFAULT_BENCH.ingest_events_per_s
    assert bench["pending_user_bytes"] == DEFAULT_BENCH.pending_user_bytes  # not in quick.json
    unrelated = tmp_path / "other.json"
    unrelated.write_text('{"hello": 1}')
    assert main([*EXAMPLE, "--bench", str(unrelated)]) == EX_USAGE
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert main([*EXAMPLE, "--bench", str(broken)]) == EX_USAGE


@pytest.mark.parametrize("change", [
    ("--users", "0"), ("--events-per-user-day", "0"), ("--gpu", "tpu"),
    ("--reasoning-tokens", "-1"), ("--window-max-age", "-5"), ("--active-hours", "30"),
    ("--target-utilisation", "1.5"), ("--peak-to-mean", "0.5"),
])
def test_bad_input_is_a_usage_error(change, capsys):
    args = [*EXAMPLE, *change]
    assert main(args) == EX_USAGE
    assert "Invalid value" in capsys.readouterr().err


def test_required_options_and_an_impossible_reply(capsys):
    assert main(["plan", "--users", "10"]) == EX_USAGE
    assert "Missing option" in capsys.readouterr().err
    assert main([*EXAMPLE[:-4], "--reasoning-tokens", "4090", "--gpu", "h100"]) == EX_USAGE
    assert "STREAMER_MODEL__MAX_TOKENS" in capsys.readouterr().err


def test_the_readme_shows_the_real_output_of_the_worked_example():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("$ streamer plan --users 10000000 --events-per-user-day 20")
    shown = readme[start:readme.index("```", start)].split("\n", 1)[1].rstrip("\n")
    result = run(*EXAMPLE, env={"COLUMNS": "110"})
    assert result.output.rstrip("\n") == shown, "regenerate the README example: COLUMNS=110 " \
                                                "streamer plan ... (README, Capacity planning)"
