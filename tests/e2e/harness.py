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
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the process
    popen = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, **env}, cwd=ROOT, start_new_session=True,
    )
    return Proc(name, popen, log_path)


def start_standin(log_dir: Path, *extra: str) -> tuple[Proc, str]:
    port = free_port()
    proc = spawn(f"standin-{port}", [sys.executable, "-m", "streamer", "standin", "--port",
                                     str(port), *extra], {}, log_dir)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.popen.poll() is not None:
            break
    raise RuntimeError(f"stand-in did not start:\n{proc.log_tail()}")


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
            "STREAMER_KAFKA__PARTITIONS": "4",
            "STREAMER_CASSANDRA__PORT": str(self.cassandra_port),
            "STREAMER_CASSANDRA__KEYSPACE": self.keyspace,
            "STREAMER_MODEL__BASE_URLS": json.dumps([f"{u}/v1" for u in self.model_urls]),
            "STREAMER_WINDOW__MAX_EVENTS": "4",
            "STREAMER_WINDOW__MAX_AGE_S": "2",
            "STREAMER_WEB_PORT": str(web_port),
            "STREAMER_LOG_LEVEL": "INFO",
            **self.extra_env,
        }

    def kafka_settings(self):
        from streamer.settings import KafkaSettings

        return KafkaSettings(
            bootstrap_servers=self.bootstrap, input_topic=self.input_topic,
            output_topic=self.output_topic, dead_letter_topic=self.dlq_topic, partitions=4,
        )

    async def ensure_topics(self) -> None:
        """Provision topics as an operator would (`streamer topics ensure`) before producing."""
        from streamer.adapters.kafka.admin import ensure_topics

        problems = await ensure_topics(self.kafka_settings())
        assert problems == [], problems

    def start_worker(self, log_dir: Path, name: str = "worker") -> Proc:
        port = free_port()
        return spawn(name, [sys.executable, "-m", "streamer", "worker"], self.env(port), log_dir)


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
