"""Shared fixtures: tiers by directory, and the real servers the integration tiers need.

In the full run (`make test`) Kafka and Cassandra are started by `deploy/local/infra.py`; a test
that needs one and cannot reach it FAILS with instructions, it never skips.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections import Counter
from pathlib import Path

import pytest

TIERS = ("unit", "integration", "e2e", "chart")
ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
    parser.addoption("--run-gpu", action="store_true",
                     help="also run tests marked gpu (needs a CUDA GPU and the gpu extra)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))
    if not config.getoption("--run-gpu"):  # deselected (reported), not skipped
        gpu = [i for i in items if i.get_closest_marker("gpu")]
        if gpu:
            config.hook.pytest_deselected(items=gpu)
            items[:] = [i for i in items if not i.get_closest_marker("gpu")]


def _tier(item) -> str:
    for tier in TIERS:
        if item.get_closest_marker(tier):
            return tier
    return "other"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    counts: dict[str, Counter[str]] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") not in ("call", "setup") or not hasattr(report, "nodeid"):
                continue
            if outcome == "passed" and report.when != "call":
                continue
            tier = report.nodeid.split("/")[1] if report.nodeid.startswith("tests/") else "other"
            tier = tier if tier in TIERS else "other"
            counts.setdefault(tier, Counter())[outcome] += 1
    terminalreporter.section("tests per tier")
    for tier in (*TIERS, "other"):
        if tier in counts:
            c = counts[tier]
            terminalreporter.write_line(
                f"{tier:12s} passed={c['passed']} failed={c['failed'] + c['error']} "
                f"skipped={c['skipped']}"
            )


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


KAFKA_PORT = _port("PREFSTREAM_KAFKA_PORT", 9092)
CASSANDRA_PORT = _port("PREFSTREAM_CASSANDRA_PORT", 9042)


def _require(port: int, what: str) -> None:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        pytest.fail(
            f"{what} is not reachable on 127.0.0.1:{port}. Start the local servers with "
            "`make up` (or run the whole suite with `make test`).",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    _require(KAFKA_PORT, "Kafka")
    return f"127.0.0.1:{KAFKA_PORT}"


@pytest.fixture(scope="session")
def cassandra_port() -> int:
    _require(CASSANDRA_PORT, "Cassandra")
    return CASSANDRA_PORT


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, keyspace and group names."""
    return uuid.uuid4().hex[:10]
