"""deploy/Dockerfile, .dockerignore and deploy/compose.yaml, checked without a Docker engine:
the Dockerfile is parsed (stages, user, entrypoint, no compilers in the runtime stage), its build
context is reproduced and the wheel it would build is built and inspected, and the compose file
is parsed and cross-checked against the settings and the CLI.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
from pydantic import BaseModel

from streamer.entrypoints.cli import cli as streamer_cli
from streamer.settings import Settings

try:
    import yaml
except ImportError:  # pragma: no cover - reported by `_yaml`
    yaml = None  # type: ignore[assignment]

pytestmark = pytest.mark.chart

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "deploy" / "compose.yaml"
PYPROJECT = ROOT / "pyproject.toml"
COMPILERS = re.compile(r"\b(gcc|g\+\+|cc|clang|build-essential|make|cmake|rustc|cargo|gfortran)\b")
# Files a package reads at run time besides its modules; its wheel must carry them:
# package -> the distribution (wheel name prefix) that ships it.
PACKAGE_DATA = {"streamer": "prefstream", "schemas": "prefstream_schemas"}


# --------------------------------------------------------------------------- Dockerfile parsing


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined and comments dropped."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        op, _, rest = line.partition(" ")
        op = op.upper()
        rest = rest.strip()
        if op == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""),
                          parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif not stages:
            if op == "ARG":
                key, _, default = rest.partition("=")
                args[key] = default
        else:
            stages[-1].instructions.append((op, rest))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    _, parsed = parse_dockerfile(DOCKERFILE.read_text())
    return parsed


@pytest.fixture(scope="module")
def final(stages) -> Stage:
    return stages[-1]


def _exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed), value
    return parsed


def _yaml():
    if yaml is None:
        pytest.fail("PyYAML is not installed: add `pyyaml` to the dev extra of pyproject.toml",
                    pytrace=False)
    return yaml


def settings_env_names() -> set[str]:
    names = set()
    for name, fld in Settings.model_fields.items():
        ann = fld.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            names |= {f"STREAMER_{name.upper()}__{sub.upper()}" for sub in ann.model_fields}
        else:
            names.add(f"STREAMER_{name.upper()}")
    return names


def cli_accepts(argv: list[str], entrypoint: str = "streamer") -> bool:
    """Whether `<entrypoint> <argv>` is a valid command line (`streamer`, or the stand-in)."""
    if entrypoint == "streamer-standin":
        from streamer.devtools.standin.__main__ import build_parser as standin_parser

        standin_parser().parse_args(argv)
        return True
    assert entrypoint == "streamer", entrypoint
    try:
        streamer_cli.make_context("streamer", list(argv))
    except click.ClickException:
        return False
    return True


# --------------------------------------------------------------------------- Dockerfile


def test_multi_stage_builder_then_slim_runtime(stages):
    assert len(stages) >= 2
    names = [s.name for s in stages]
    assert "builder" in names
    assert stages[-1].base == "python:3.11-slim"
    builder = stages[names.index("builder")]
    assert builder.base == stages[-1].base, "wheels must be built for the runtime's Python and libc"
    assert any("pip wheel" in run for run in builder.all("RUN"))


def test_runtime_runs_as_non_root_uid_10001(final):
    users = final.all("USER")
    assert users, "the runtime stage must set USER"
    user = users[-1].split(":")[0]
    assert user == "10001", f"USER {users[-1]}: use the numeric UID the chart's runAsUser expects"
    assert any("--uid 10001" in run for run in final.all("RUN")), "create the 10001 user"


def test_entrypoint_is_the_streamer_console_script(final):
    assert _exec_form(final.all("ENTRYPOINT")[-1]) == ["streamer"]
    cmd = _exec_form(final.all("CMD")[-1])
    assert cmd == ["worker"]
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert scripts.get("streamer") == "streamer.entrypoints.cli:main"
    assert scripts.get("streamer-standin") == "streamer.devtools.standin.__main__:main"
    assert cli_accepts(cmd)


def test_runtime_stage_installs_only_wheels_and_no_compilers(final, stages):
    for run in final.all("RUN"):
        assert not COMPILERS.search(run), f"compiler in the runtime stage: {run}"
        assert "apt-get install" not in run, f"packages installed in the runtime stage: {run}"
        for pip in re.findall(r"pip install[^&;]*", run):
            assert "--no-index" in pip, f"runtime pip must install from the wheels only: {pip}"
    for src in final.all("COPY") + final.all("ADD"):
        assert "--from=builder" in src, f"runtime copies something that is not a build product: {src}"
    assert any("from=builder" in run and "/wheels" in run for run in final.all("RUN")), \
        "the runtime installs the builder's wheels"


def test_runtime_workdir_is_the_charts_scratch_dir(final):
    values = _yaml().safe_load((ROOT / "helm" / "prefstream" / "values.yaml").read_text())
    assert final.all("WORKDIR")[-1] == values["scratch"]["workingDir"]


# --------------------------------------------------------------------------- build context


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (Go filepath.Match plus `**`, as moby does)."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c) or (c if c in "[]" else re.escape(c))
        i += 1
    return re.compile(out + "$")


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether a context path is excluded: the last matching pattern (on the path or a parent)
    wins, `!` re-includes."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pat = os.path.normpath(raw[1:] if negate else raw).lstrip("/")
        rx = _pattern_regex(pat)
        if any(rx.match(c) for c in candidates):
            excluded = not negate
    return excluded


def _ignore_patterns() -> list[str]:
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def _copy_sources(stage: Stage) -> list[str]:
    sources = []
    for copy_ in stage.all("COPY"):
        words = [w for w in shlex.split(copy_) if not w.startswith("--")]
        sources += words[:-1]
    return sources


def test_dockerignore_keeps_the_build_inputs_and_drops_local_state(stages):
    patterns = _ignore_patterns()
    builder = next(s for s in stages if s.name == "builder")
    sources = _copy_sources(builder)
    assert {"pyproject.toml", "README.md", "streamer", "schemas"} <= {s.rstrip("/") for s in sources}
    for src in sources:
        src_path = ROOT / src
        assert src_path.exists(), f"COPY {src}: no such path in the repository"
        files = [src_path] if src_path.is_file() else [
            p for p in src_path.rglob("*") if p.is_file() and "__pycache__" not in p.parts
            and not any(part.endswith(".egg-info") for part in p.parts)]  # local build state
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            assert not dockerignored(rel, patterns), f"{rel} is needed but .dockerignore drops it"
    for local in (".venv/bin/python", ".git/HEAD", ".tools/bin/helm", "run/x", "tests/conftest.py",
                  "schemas/prefstream_schemas.egg-info/PKG-INFO",
                  "helm/prefstream/values.yaml", "prefstream-demo.sqlite3",
                  "streamer/__pycache__/cli.cpython-311.pyc", "e2e-abc-data/x"):
        assert dockerignored(local, patterns), f"{local} should not be in the build context"


def test_builder_context_builds_a_wheel_with_the_script_and_package_data(stages, tmp_path):
    """Reproduce the builder's COPY set, build the project wheel the way `pip wheel` in the
    builder does, and check it carries the console script and every data file the code loads."""
    patterns = _ignore_patterns()
    ctx = tmp_path / "ctx"
    builder = next(s for s in stages if s.name == "builder")
    for src in _copy_sources(builder):
        src_path = ROOT / src
        for f in ([src_path] if src_path.is_file() else sorted(src_path.rglob("*"))):
            rel = f.relative_to(ROOT).as_posix()
            if f.is_file() and not dockerignored(rel, patterns):
                (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, ctx / rel)
    out = tmp_path / "wheels"
    wheel_runs = [r for r in builder.all("RUN") if "pip wheel" in r]
    assert wheel_runs and wheel_runs[0].index("./schemas") < wheel_runs[0].index('".[tokenizer]"'), \
        "the builder builds prefstream-schemas first (prefstream depends on it)"
    for project in (ctx / "schemas", ctx):  # as the builder does: ./schemas, then the project
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
             "--wheel-dir", str(out), str(project)],
            capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    for pkg, dist in PACKAGE_DATA.items():
        (wheel,) = out.glob(f"{dist}-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
        if pkg == "streamer":
            entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
            with zipfile.ZipFile(wheel) as zf:
                assert "streamer = streamer.entrypoints.cli:main" in zf.read(entry_points).decode()
        assert not {n.split("/")[0] for n in names if not n.startswith(dist)} - {pkg}, \
            f"{wheel.name} ships packages other than {pkg}"
        needed = sorted(
            p.relative_to(ROOT).as_posix() for p in (ROOT / pkg).rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc", ".toml", ".md")
            and "__pycache__" not in p.parts and "egg-info" not in p.as_posix()
            and "build" not in p.relative_to(ROOT).parts
        )
        missing = [n for n in needed if n not in names]
        assert not missing, (
            f"{wheel.name} lacks files the code reads at run time (add them to "
            f"[tool.setuptools.package-data] of its pyproject.toml): {missing}")


# --------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict:
    return _yaml().safe_load(COMPOSE.read_text())


def _streamer_services(compose: dict) -> dict[str, dict]:
    return {n: s for n, s in compose["services"].items()
            if str(s.get("image", "")).startswith("prefstream")}


def test_compose_has_the_laptop_stack(compose):
    services = compose["services"]
    assert services["kafka"]["image"] == "apache/kafka:3.9.1"
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"], "KRaft mode"
    assert services["cassandra"]["image"] == "cassandra:5.0"
    commands = {n: [*s.get("entrypoint", []), *s.get("command", [])]
                for n, s in _streamer_services(compose).items()}
    assert {"streamer-standin", "worker", "api"} <= {c[0] for c in commands.values()}, commands
    for svc in _streamer_services(compose).values():
        build = svc["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_commands_are_streamer_commands(compose):
    for name, svc in _streamer_services(compose).items():
        entrypoint = (svc.get("entrypoint") or ["streamer"])[0]
        assert cli_accepts(list(svc["command"]), entrypoint), f"{name}: {entrypoint} {svc['command']}"


def test_compose_env_names_are_settings(compose):
    known = settings_env_names()
    seen = set()
    for name, svc in compose["services"].items():
        env = svc.get("environment") or {}
        for key in env:
            if key.startswith("STREAMER_"):
                assert key in known, f"{name}: {key} is not a setting"
                seen.add(key)
    assert {"STREAMER_KAFKA__BOOTSTRAP_SERVERS", "STREAMER_CASSANDRA__HOSTS",
            "STREAMER_MODEL__BASE_URLS"} <= seen


def test_compose_values_parse_as_settings(compose, monkeypatch):
    env = compose["services"]["worker"]["environment"]
    for key in list(os.environ):
        if key.startswith("STREAMER_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        # resolve ${VAR:-default} the way compose does when VAR is unset
        value = re.sub(r"\$\{\w+:-(.*)\}", r"\1", str(value))
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.cassandra.hosts == ["cassandra"]
    assert settings.model.base_urls == ["http://model:8001/v1"]


def test_compose_dependencies_and_hardening(compose):
    services = compose["services"]
    for name, svc in services.items():
        for dep in svc.get("depends_on") or {}:
            assert dep in services, f"{name} depends on unknown {dep}"
        for port in svc.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    worker_deps = services["worker"]["depends_on"]
    assert worker_deps["migrate"]["condition"] == "service_completed_successfully"
    assert worker_deps["topics"]["condition"] == "service_completed_successfully"
    for name, svc in _streamer_services(compose).items():
        assert str(svc["user"]).split(":")[0] == "10001", name
        assert svc.get("read_only") is True, name
        assert svc.get("cap_drop") == ["ALL"], name
        tmpfs = [t.split(":")[0] for t in svc.get("tmpfs", [])]
        assert "/tmp" in tmpfs, name
    assert "/healthz" in json.dumps(services["worker"]["healthcheck"]) or \
        "/livez" in json.dumps(services["worker"]["healthcheck"])
