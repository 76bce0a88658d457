"""Shared helpers of the benchmark: processes, private infra, event streams, machine info."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from tests.e2e.harness import Proc, free_port  # noqa: F401 - re-exported to the bench modules
from tests.e2e.harness import spawn as _spawn
from tests.e2e.harness import start_standin as _start_standin

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = ROOT / "run" / "bench"
LOG_DIR = RUN_DIR / "bench-logs"
RESULTS_DIR = Path(__file__).resolve().parent / "results"

INFRA_ENV = {
    "PREFSTREAM_RUN_DIR": str(RUN_DIR),
    "PREFSTREAM_KAFKA_PORT": "39092",
    "PREFSTREAM_KAFKA_CONTROLLER_PORT": "39093",
    "PREFSTREAM_CASSANDRA_PORT": "39042",
    "PREFSTREAM_CASSANDRA_STORAGE_PORT": "37000",
    "PREFSTREAM_CASSANDRA_JMX_PORT": "37199",
}
BOOTSTRAP = "127.0.0.1:39092"
CASSANDRA_PORT = 39042


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def infra(command: str, timeout_s: float = 600.0) -> float:
    """``deploy/local/infra.py <command>`` on the private ports; returns seconds taken."""
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "deploy/local/infra.py", command],
        env={**os.environ, **INFRA_ENV}, cwd=ROOT, capture_output=True, text=True,
        timeout=timeout_s, stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"infra.py {command} failed ({proc.returncode}):\n{proc.stdout}\n"
                           f"{proc.stderr}")
    return time.monotonic() - t0


def machine_info() -> dict:
    mem_kb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_total_mb": round(mem_kb / 1024) if mem_kb else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def spawn(name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    return _spawn(name, args, env or {}, LOG_DIR)


def start_standin(name: str, *, ttft_ms: float, per_token_ms: float, max_concurrency: int,
                  max_queue: int, seed: int, jitter_ms: float = 0.0) -> tuple[Proc, str]:
    """A stand-in model server subprocess (``name`` is informational; logs go to LOG_DIR)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    return _start_standin(LOG_DIR, "--ttft-ms", str(ttft_ms), "--per-token-ms", str(per_token_ms),
                          "--max-concurrency", str(max_concurrency), "--max-queue", str(max_queue),
                          "--jitter-ms", str(jitter_ms), "--seed", str(seed),
                          "--log-level", "WARNING")


# One client for every poll of the harness: ``httpx.get`` builds a new client, and with it a TLS
# context, per call (about 35 ms of CPU), which at 10 polls/s took a third of a core from the
# worker being measured on a 2-core machine.
HTTP = httpx.Client(timeout=5)


def standin_stats(base: str) -> dict:
    return HTTP.get(f"{base}/admin/stats").json()


def worker_env(suffix: str, model_urls: list[str], web_port: int, **extra: str) -> dict[str, str]:
    return {
        "STREAMER_KAFKA__BOOTSTRAP_SERVERS": BOOTSTRAP,
        "STREAMER_KAFKA__CONSUMER_GROUP": f"bench-{suffix}",
        "STREAMER_KAFKA__INPUT_TOPIC": f"bench-{suffix}.interactions.v1",
        "STREAMER_KAFKA__OUTPUT_TOPIC": f"bench-{suffix}.summaries.v1",
        "STREAMER_KAFKA__DEAD_LETTER_TOPIC": f"bench-{suffix}.interactions.v1.dlq",
        "STREAMER_KAFKA__FAILURES_TOPIC": f"bench-{suffix}.update-failures.v1",
        "STREAMER_KAFKA__PARTITIONS": "4",
        "STREAMER_CASSANDRA__PORT": str(CASSANDRA_PORT),
        "STREAMER_CASSANDRA__KEYSPACE": f"bench_{suffix.replace('-', '_')}",
        "STREAMER_MODEL__BASE_URLS": json.dumps([f"{u}/v1" for u in model_urls]),
        "STREAMER_WEB_PORT": str(web_port),
        "STREAMER_LOG_LEVEL": os.environ.get("BENCH_WORKER_LOG_LEVEL", "WARNING"),
        "STREAMER_SHUTDOWN_TIMEOUT_S": "3",
        "STREAMER_WINDOW__MAX_EVENT_AGE_S": str(20 * 365 * 86400),
        "STREAMER_WINDOW__MAX_CLOCK_SKEW_S": str(20 * 365 * 86400),
        **extra,
    }


def topics(suffix: str) -> tuple[str, str]:
    return f"bench-{suffix}.interactions.v1", f"bench-{suffix}.summaries.v1"


async def ensure_topics(suffix: str) -> None:
    from streamer.adapters.kafka.admin import ensure_topics as _ensure
    from streamer.settings import KafkaSettings

    inp, out = topics(suffix)
    problems = await _ensure(KafkaSettings(
        bootstrap_servers=BOOTSTRAP, input_topic=inp, output_topic=out,
        dead_letter_topic=f"{inp}.dlq", failures_topic=f"bench-{suffix}.update-failures.v1",
        partitions=4,
    ))
    if problems:
        raise RuntimeError(f"topic problems: {problems}")


def events(n_users: int, per_user, seed: int, prefix: str, activity: str = "uniform") -> list[dict]:
    """Synthetic events with ids made unique to this benchmark phase."""
    from streamer.devtools.synthetic import generate_events

    out = generate_events(n_users, per_user, seed=seed, activity=activity)
    for e in out:
        e["user_id"] = f"{prefix}-{e['user_id']}"
        e["event_id"] = f"{prefix}-{e['event_id']}"
    return out


def encode(e: dict) -> tuple[bytes, bytes]:
    return e["user_id"].encode(), json.dumps(e, separators=(",", ":")).encode()


def wait_http(url: str, timeout_s: float, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if HTTP.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")
        time.sleep(0.3)
    raise RuntimeError(f"{url} not up after {timeout_s}s" + (f":\n{proc.log_tail()}" if proc else ""))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)
