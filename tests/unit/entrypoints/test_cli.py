"""The click CLI: commands, help, options from settings, exit codes, shell completion."""

import json

import click
import pytest
from click.testing import CliRunner

from streamer.entrypoints.cli import EX_USAGE, cli, main

pytestmark = pytest.mark.unit

COMMANDS = {"worker", "api", "replay", "backfill", "eval", "migrate", "topics", "get", "history",
            "forget", "export", "import-summaries", "rebuild-current", "import",
            "parked", "completion", "doctor", "quality", "export-training", "plan"}


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
