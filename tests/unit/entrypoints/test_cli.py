"""The click CLI: commands, help, options from settings, exit codes, shell completion."""

import json

import click
import pytest
from click.testing import CliRunner

from streamer.entrypoints.cli import EX_USAGE, cli, main

pytestmark = pytest.mark.unit

COMMANDS = {"worker", "api", "replay", "backfill", "eval", "migrate", "topics", "get", "history",
            "forget", "export", "import-summaries", "rebuild-current", "import",
            "parked", "completion", "doctor", "quality", "export-training", "plan", "catalog",
            "mapping"}


def run(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_every_command_is_listed_with_its_help():
    result = run("--help")
    assert result.exit_code == 0
    assert set(cli.commands) == COMMANDS
    for name in COMMANDS:
        assert name in result.output
        sub = run(name, "--help")
        assert sub.exit_code == 0 and "Usage: cli " + name in sub.output.replace("streamer", "cli")


def test_version_and_usage_errors():
    assert run("--version").output.startswith("streamer, version ")
    assert main(["no-such-command"]) == EX_USAGE
    assert main(["parked", "explode"]) == EX_USAGE
    assert main(["api", "--port", "0"]) == EX_USAGE


def test_invalid_configuration_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setenv("STREAMER_MODEL__MAX_CONCURRENCY", "0")
    assert main(["get", "u1"]) == EX_USAGE
    assert "invalid STREAMER_* configuration" in capsys.readouterr().err


def defaults(command, *args):
    """The values the command would be called with when only ``args`` are given."""
    return cli.commands[command].make_context(command, list(args)).params


def test_options_backed_by_settings_have_no_default_of_their_own():
    api = defaults("api")
    assert api["host"] is None and api["port"] is None  # STREAMER_API__HOST / __PORT
    assert defaults("replay")["window_events"] is None  # STREAMER_WINDOW__MAX_EVENTS
    assert defaults("backfill", "README.md")["window_age_s"] is None  # one event-time default


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_completion_scripts(shell):
    result = run("completion", shell)
    assert result.exit_code == 0 and "_STREAMER_COMPLETE" in result.output


def test_completion_completes_subcommands():
    from click.shell_completion import ShellComplete

    names = [c.value for c in ShellComplete(cli, {}, "streamer", "_STREAMER_COMPLETE")
             .get_completions([], "pa")]
    assert names == ["parked"]


def test_replay_runs_the_bundled_sample_on_the_baseline(tmp_path):
    db = tmp_path / "demo.sqlite3"
    result = run("replay", "--sqlite", str(db), "--no-progress", "--users", "1")
    assert result.exit_code == 0, result.output
    assert "CPU BASELINE" in result.output and "summary versions" in result.output
    assert db.exists()


def test_get_of_an_unknown_user_exits_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STREAMER_STORE", "sqlite")
    monkeypatch.setenv("STREAMER_SQLITE_PATH", str(tmp_path / "empty.sqlite3"))
    assert main(["get", "nobody"]) == 1
    assert "no summary for user 'nobody'" in capsys.readouterr().err


def test_eval_make_synthetic(tmp_path):
    out = tmp_path / "s.jsonl"
    assert run("eval", "--make-synthetic", str(out)).exit_code == 0
    assert json.loads(out.read_text().splitlines()[0]).keys() >= {"userid", "history"}
    assert isinstance(cli, click.Group)


DATASETS = __import__("pathlib").Path(__file__).resolve().parents[2] / "fixtures" / "datasets"


def _replay_summaries(tmp_path, jsonl, name):
    import sqlite3

    db = tmp_path / f"{name}.sqlite3"
    result = run("replay", str(jsonl), "--sqlite", str(db), "--no-progress")
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT user_id, version, record FROM summary_history "
                            "ORDER BY user_id, version").fetchall()
    # what the model wrote and from which events (not the times the versions were written)
    return [(u, v, (r := json.loads(rec))["summary"], r["event_ids"], r["dropped_event_ids"])
            for u, v, rec in rows], result.output


@pytest.mark.parametrize("dataset, files", [
    ("mind", ("behaviors.tsv", "news.tsv")), ("movielens", ("ratings.csv", "movies.csv"))])
def test_import_ids_only_with_its_catalog_replays_to_the_same_summaries(tmp_path, dataset, files):
    paths = [str(DATASETS / dataset / f) for f in files]
    inline, by_id = tmp_path / "inline.jsonl", tmp_path / "by_id.jsonl"
    assert run("import", dataset, *paths, "--out", str(inline), "--no-progress").exit_code == 0
    result = run("import", dataset, *paths, "--ids-only", "--out", str(by_id), "--no-progress")
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in by_id.read_text().splitlines()]
    n_items = sum(d["type"] == "catalog.item" for d in docs)
    assert n_items and all(d["type"] == "catalog.item" for d in docs[:n_items])  # catalog first
    for d in docs[n_items:]:  # events name their items by id only
        for key in ("chosen", "rejected", "item"):
            if d.get(key):
                assert set(d[key]) == {"id"} or all(v in (None, (), []) for k, v in d[key].items()
                                                    if k != "id")
    want, _ = _replay_summaries(tmp_path, inline, "inline")
    got, output = _replay_summaries(tmp_path, by_id, "by_id")
    assert want and got == want
    assert f"({n_items} catalog items)" in output


def test_catalog_load_refuses_a_file_with_an_invalid_line_and_publishes_nothing(tmp_path):
    f = tmp_path / "catalog.jsonl"
    good = {"type": "catalog.item", "schema_version": 1, "domain": "news",
            "item": {"id": "n1", "title": "T"}}
    f.write_text(json.dumps(good) + "\n" + json.dumps({**good, "domain": "Not A Domain"}) + "\n")
    # no broker is configured or needed: the file is checked before anything is sent
    result = CliRunner().invoke(cli, ["catalog", "load", str(f), "--no-progress"],
                                env={"STREAMER_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert result.exit_code == 1
    assert "1 invalid catalog line(s), nothing published" in result.output
    assert "line 2: catalog record invalid at domain" in result.output
