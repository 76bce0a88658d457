"""Fault injection on real servers: the worker must lose nothing, apply nothing twice and keep
its ledger balanced while it is SIGKILLed, rebalanced, cut off from Cassandra, fed model errors
and garbage, and fed duplicates.

Every scenario runs `streamer worker` subprocesses against a PRIVATE Kafka + Cassandra pair
(started here through deploy/local/infra.py, with its own run dir and ports, because scenario c
kills Cassandra), streams a realistic clickstream (`streamer.devtools.synthetic.generate_events`, with a few
invalid records) while the fault happens, then checks the ledger (`tests/e2e/ledger.py`):
produced events vs stored versions vs change events, and the dead-letter topic (only the invalid
records, never a valid event).

Scenarios: (a) three SIGKILLs of the worker mid-stream, each followed by a restart in place
(same static member id and port, as a pod), with the time from restart to the first record
consumed, then every event replayed once more; (a2) 20 s windows: the input is committed within
a commit interval while every window is still open, then a SIGKILL: nothing is re-read, the
restarted worker rebuilds the windows from the durable buffer and applies every event once;
(b) a second worker joining the group mid-stream, then the first one SIGTERMed; (c) Cassandra
SIGKILLed for 10-15 s and restarted (the worker must stay up, dead-letter nothing valid and
resume by itself), then every event replayed once more; (d) the model answering 503 for ~10 s,
then malformed replies of every kind for ~10 s (a model failing everyone: nobody is parked);
(e) duplicates: the same event twice in one batch, re-produced events still pending and
re-produced events already applied; (f) the broker killed and restarted; (g) a poison user (the
model refuses its prompts with a 400) among 20 healthy users: parked with at most 5 notices,
every healthy event applied, every partition committed to its end; (h) a transactional
upstream, one event per transaction plus aborted ones (never applied), commits go on; (i) a
rebalance while model calls take 6 s: the old owner's late calls are fenced, versions on the
summaries topic only go up and the last per user is the highest stored; (j) records older than
the dedupe horizon: dead-lettered, never applied.

Test-only settings: windows close after 1 s; STREAMER_KAFKA__SESSION_TIMEOUT_S=6 and
HEARTBEAT_INTERVAL_S=1 so that a SIGKILLed member without a static id leaves the group in
seconds; retries back off from 0.5 s to at most 4 s; the private Cassandra keeps its schema durable
(-Dcassandra.unsafesystem=false), as a production node does, so that a SIGKILL is a crash and
not a schema loss.

A summary of each scenario (faults survived, events checked, timings) is written to
`run/fault-suite-report.json` and printed at the end of the module.  The moments of the faults
are random but seeded: set PREFSTREAM_FAULT_SEED to replay another schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from schemas import DeadLetter, SummaryChanged, SummaryUpdateFailed
from streamer.devtools.synthetic import encode_record, generate_events, invalid_kind
from streamer.services.updater import NO_MODEL
from tests.e2e.harness import (
    INFRA_HELP,
    ROOT,
    PrivateInfra,
    Proc,
    Stack,
    TopicReader,
    committed_offsets,
    end_offsets,
    free_port,
    grep_log,
    locate_records,
    log_tails,
    read_topic,
    shorten,
    start_standin,
)
from tests.e2e.ledger import LedgerError, LedgerReport, check_ledger, read_store
from tests.factories import item, pairwise

log = logging.getLogger("prefstream.faults")

SEED = int(os.environ.get("PREFSTREAM_FAULT_SEED", "2026"))
REPORT_FILE = ROOT / "run" / "fault-suite-report.json"
STANDIN_ARGS = ("--ttft-ms", "20", "--per-token-ms", "0.2")
# the private pair's ports when all are free, else a free block is picked at run time
PREFERRED_PORTS = (19092, 19093, 19042, 17000, 17199)
INTERESTING = ("Traceback", "ERROR", "CRITICAL", "exception", "unavailable", "conflict",
               "update failed", "rebalance", "revoked", "assigned")


# ---------------------------------------------------------------------------------------------
# module fixtures: private servers and the suite report
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_infra(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("faults") / "faults-run"
    infra = PrivateInfra.allocate(run_dir, preferred=PREFERRED_PORTS)
    t0 = time.monotonic()
    try:
        try:
            infra.up("cassandra", "kafka")
        except RuntimeError as exc:
            if "in use" not in str(exc):
                raise
            infra.clean()  # someone took a port meanwhile: once more on other ports
            infra = PrivateInfra.allocate(run_dir)
            infra.up("cassandra", "kafka")
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        try:
            infra.clean()
        except Exception:  # noqa: BLE001 - the start failure is what matters
            pass
        pytest.fail(f"the fault suite could not start its private Kafka + Cassandra "
                    f"(ports {infra.ports}, run dir {run_dir}):\n{exc}\n{INFRA_HELP}",
                    pytrace=False)
    infra.startup_s = round(time.monotonic() - t0, 1)
    log.info("private servers up in %.1fs: %s", infra.startup_s, infra.ports)
    try:
        yield infra
    finally:
        try:
            infra.clean()  # down (SIGTERM, then SIGKILL after the grace) and delete the data
        except Exception as exc:  # noqa: BLE001
            log.error("could not clean the private servers in %s: %s", run_dir, exc)


@pytest.fixture(scope="module")
def suite_report(request, private_infra):
    report = {
        "suite": "tests/e2e/test_faults.py",
        "seed": SEED,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "servers": {"ports": private_infra.ports,
                    "startup_s": getattr(private_infra, "startup_s", None)},
        "scenarios": {},
    }
    yield report
    report["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    report["infra_operations"] = private_infra.operations
    _write_report(report)
    lines = [_summary_line(s) for s in report["scenarios"].values()]
    totals = Counter()
    for s in report["scenarios"].values():
        for k in ("kills", "rebalances", "outages", "events_checked", "versions"):
            totals[k] += s.get(k, 0) or 0
    lines.append(f"total: {dict(totals)}; report: {REPORT_FILE}")
    for line in lines:
        log.info("fault suite: %s", line)
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if tr is not None:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            tr.write_line("")
            tr.write_sep("-", "fault suite summary")
            for line in lines:
                tr.write_line(line)


def _write_report(report: dict) -> None:
    try:
        REPORT_FILE.parent.mkdir(parents=True, exist_ok=True)
        REPORT_FILE.write_text(json.dumps(report, indent=2, default=str))
    except OSError as exc:
        log.warning("cannot write %s: %s", REPORT_FILE, exc)


def _summary_line(s: dict) -> str:
    faults = ", ".join(f"{k}={s[k]}" for k in ("kills", "rebalances", "outages") if s.get(k))
    return (f"{s['scenario']}: {s['outcome']} in {s.get('seconds', '?')}s; "
            f"faults survived: {faults or 'n/a'}; events checked={s.get('events_checked', 0)}, "
            f"versions={s.get('versions', 0)}, duplicate change copies="
            f"{s.get('duplicate_change_copies', 0)}, dead letters={s.get('dead_letters', 0)}, "
            f"ledger warnings={len(s.get('ledger_warnings') or ())}")


# ---------------------------------------------------------------------------------------------
# the clickstream of a scenario
# ---------------------------------------------------------------------------------------------


@dataclass
class Stream:
    records: list[tuple[bytes | None, bytes]]  # in production order, invalid ones included
    produced: dict[str, list[str]]  # user -> valid event ids (duplicates added as produced)
    valid: list[tuple[bytes, bytes, str]]  # (key, value, event id) of each distinct valid event
    invalid_values: list[bytes]

    @property
    def valid_ids(self) -> set[str]:
        return {eid for ids in self.produced.values() for eid in ids}


def build_stream(seed: int, n_users: int, per_user: tuple[int, int],
                 invalid_rate: float = 0.04) -> Stream:
    records: list[tuple[bytes | None, bytes]] = []
    produced: dict[str, list[str]] = defaultdict(list)
    valid: list[tuple[bytes, bytes, str]] = []
    invalid: list[bytes] = []
    for r in generate_events(n_users, per_user, seed=seed, invalid_rate=invalid_rate):
        value = encode_record(r)
        if isinstance(r, dict) and invalid_kind(r) is None:
            key = r["user_id"].encode()
            produced[r["user_id"]].append(r["event_id"])
            valid.append((key, value, r["event_id"]))
            records.append((key, value))
        else:  # invalid: dead-lettered by the worker; no key so that no key check decides it
            invalid.append(value)
            records.append((None, value))
    assert len(valid) >= n_users and (invalid_rate == 0 or invalid)
    return Stream(records, dict(produced), valid, invalid)


class Feeder:
    """One producer for a scenario: sends batches (acks=all) and trickles a stream."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        self.sent = 0
        self.rush = asyncio.Event()  # set: send the rest at once

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def send(self, records) -> None:
        futures = [await self.producer.send(self.topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
        self.sent += len(futures)

    async def trickle(self, records, *, batch: int, interval_s: float) -> None:
        i = 0
        while i < len(records):
            n = len(records) - i if self.rush.is_set() else batch
            await self.send(records[i:i + n])
            i += n
            if i < len(records) and not self.rush.is_set():
                try:
                    await asyncio.wait_for(self.rush.wait(), interval_s)
                except TimeoutError:
                    pass


# ---------------------------------------------------------------------------------------------
# a scenario: its stack, workers, change-topic pump and result
# ---------------------------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    infra: PrivateInfra
    log_dir: Path
    rng: random.Random
    result: dict
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    workers: list[Proc] = field(default_factory=list)
    standin: Proc | None = None
    standin_url: str = ""
    stack: Stack | None = None
    changes: list[SummaryChanged] = field(default_factory=list)
    change_times: list[float] = field(default_factory=list)  # wall clock when each was read
    applied: set[str] = field(default_factory=set)
    expect_alive: set[str] = field(default_factory=set)  # workers that must not exit
    t0: float = field(default_factory=time.monotonic)
    _reader: TopicReader | None = None
    _pump: asyncio.Task | None = None
    feeder: Feeder | None = None
    tasks: list[asyncio.Task] = field(default_factory=list)
    pod_ports: dict[str, int] = field(default_factory=dict)

    # -- set-up / tear-down --------------------------------------------------------------------

    async def setup(self, extra_env: dict[str, str] | None = None) -> None:
        self.standin, self.standin_url = await asyncio.to_thread(
            start_standin, self.log_dir, *STANDIN_ARGS)
        env = {
            "STREAMER_WINDOW__MAX_AGE_S": "1",
            # a SIGKILLed member without a static id leaves the group after 6 s
            "STREAMER_KAFKA__SESSION_TIMEOUT_S": "6",
            "STREAMER_KAFKA__HEARTBEAT_INTERVAL_S": "1",
            "STREAMER_WINDOW__RETRY_BACKOFF_S": "0.5",
            "STREAMER_WINDOW__RETRY_BACKOFF_MAX_S": "4",
            **(extra_env or {}),
        }
        self.stack = Stack(self.infra.bootstrap, self.infra.cassandra_port, self.suffix,
                           [self.standin_url], extra_env=env)
        await self.stack.ensure_topics()
        self._reader = TopicReader(self.infra.bootstrap, self.stack.output_topic)
        await self._reader.__aenter__()
        self._pump = asyncio.create_task(self._pump_changes(), name=f"pump-{self.name}")
        self.feeder = Feeder(self.infra.bootstrap, self.stack.input_topic)
        await self.feeder.start()

    def feed(self, records, *, batch: int, interval_s: float) -> asyncio.Task:
        """Trickle ``records`` in the background (``feeder.rush`` sends the rest at once)."""
        task = asyncio.create_task(self.feeder.trickle(records, batch=batch,
                                                       interval_s=interval_s))
        self.tasks.append(task)
        return task

    async def close(self) -> None:
        for task in [*self.tasks, self._pump]:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._reader is not None:
            await self._reader.__aexit__(None, None, None)
        if self.feeder is not None:
            await self.feeder.stop()
        procs = [p for p in [*self.workers, self.standin] if p is not None]
        await asyncio.gather(*(asyncio.to_thread(p.stop, 15.0) for p in procs),
                             return_exceptions=True)

    async def _pump_changes(self) -> None:
        consumer = self._reader.consumer
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for msgs in batch.values():
                for m in msgs:
                    change = SummaryChanged.model_validate_json(m.value)
                    self.changes.append(change)
                    self.change_times.append(now)
                    self.applied.update(change.event_ids)

    # -- workers -----------------------------------------------------------------------------

    def start_worker(self, instance: str | None = None) -> Proc:
        """Start a worker; ``instance`` is its static group membership id (a pod name: a
        restart with the same id reclaims its partitions without waiting for a rebalance)."""
        env = {"STREAMER_KAFKA__GROUP_INSTANCE_ID": instance} if instance else {}
        # a restarted pod keeps its port (faust's assignment metadata carries the worker URL)
        port = self.pod_ports.setdefault(instance, free_port()) if instance else None
        proc = self.stack.start_worker(self.log_dir, f"{self.name}-worker-{len(self.workers) + 1}",
                                       env, port)
        proc.started_at = time.monotonic()
        self.workers.append(proc)
        self.expect_alive.add(proc.name)
        return proc

    async def wait_committed(self, *, timeout_s: float, slack: int = 0,
                             poll_s: float = 0.5) -> tuple[dict[int, int], dict[int, int], bool]:
        """Wait until the group's committed offset of every input partition is within ``slack``
        of its end offset: (end offsets, committed offsets, reached)."""
        ends = await end_offsets(self.infra.bootstrap, self.stack.input_topic)
        deadline = time.monotonic() + timeout_s
        while True:
            committed = await committed_offsets(self.infra.bootstrap, f"e2e-{self.suffix}",
                                                self.stack.input_topic)
            reached = all(committed.get(p, -1) >= e - slack for p, e in ends.items())
            if reached or time.monotonic() > deadline:
                return ends, committed, reached
            await self.sleep(poll_s)

    async def first_consumed_s(self, proc: Proc, *, timeout_s: float = 60) -> float:
        """Seconds from spawning ``proc`` to its log line for the first records consumed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if grep_log(proc, "first records consumed", limit=1):
                return round(time.monotonic() - proc.started_at, 1)
            await self.sleep(0.1)
        self.fail(f"{proc.name} consumed nothing within {timeout_s:.0f}s of its start")
        return 0.0

    async def kill(self, proc: Proc) -> None:
        self.expect_alive.discard(proc.name)
        await asyncio.to_thread(proc.kill)

    async def terminate(self, proc: Proc, grace_s: float = 20.0) -> tuple[int | None, float]:
        self.expect_alive.discard(proc.name)
        t0 = time.monotonic()
        rc = await asyncio.to_thread(proc.stop, grace_s)
        return rc, round(time.monotonic() - t0, 1)

    def diagnostics(self, n: int = 25) -> str:
        parts = [f"scenario {self.name}: {len(self.changes)} change events read, "
                 f"{len(self.applied)} event ids announced, {self.feeder.sent if self.feeder else 0} "
                 f"records produced, {time.monotonic() - self.t0:.0f}s since start"]
        for p in self.workers[-4:]:
            hits = grep_log(p, *INTERESTING, limit=12)
            if hits:
                parts.append(f"--- notable lines of {p.name}:\n" + "\n".join(shorten(hits)))
        parts.append(log_tails(self.workers[-3:], n))
        if self.standin is not None:
            parts.append(log_tails([self.standin], 10))
        return "\n".join(parts)

    def fail(self, message: str) -> None:
        self.result["failure"] = message.splitlines()[0][:300]
        raise AssertionError(f"{message}\n{self.diagnostics()}")

    def check_alive(self) -> None:
        for p in self.workers:
            if p.name in self.expect_alive and p.popen.poll() is not None:
                self.fail(f"{p.name} exited unexpectedly with code {p.popen.returncode}")

    # -- waiting -------------------------------------------------------------------------------

    async def sleep(self, seconds: float) -> None:
        """Sleep, failing fast if a worker that should run died."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.check_alive()
            await asyncio.sleep(min(0.25, left))
        self.check_alive()

    async def wait_progress(self, baseline: int, *, timeout_s: float, what: str,
                            idle: Callable[[], bool] | None = None) -> bool:
        """Wait for a change event beyond ``baseline``; False when ``idle()`` says there is
        nothing left to do (everything produced is applied and the feeder is done)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.changes) > baseline:
                return True
            if idle is not None and idle():
                return False
            await self.sleep(0.2)
        self.fail(f"no progress within {timeout_s:.0f}s while waiting for {what}")
        return False

    async def wait_applied(self, expected: set[str], *, timeout_s: float, what: str,
                           stall_s: float = 45.0) -> float:
        """Wait until every expected event id was announced; fail after ``timeout_s``, or
        earlier when nothing new was announced for ``stall_s``."""
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        last, last_t = len(self.applied & expected), t0
        while time.monotonic() < deadline and time.monotonic() - last_t < stall_s:
            if expected <= self.applied:
                return round(time.monotonic() - t0, 1)
            now_n = len(self.applied & expected)
            if now_n != last:
                last, last_t = now_n, time.monotonic()
            await self.sleep(0.25)
        missing = sorted(expected - self.applied)
        by_user = Counter(m.rsplit("-", 1)[0] for m in missing)
        where = await self.where_are(missing[:10])
        self.fail(f"{what}: {len(missing)} of {len(expected)} events never announced "
                  f"(waited {time.monotonic() - t0:.0f}s, the last {time.monotonic() - last_t:.0f}s "
                  "without any progress), "
                  f"e.g. {missing[:5]}; per user: {dict(by_user.most_common(6))}\n{where}")
        return 0.0

    async def where_are(self, event_ids: list[str]) -> str:
        """Input-topic coordinates of events vs the group's committed offsets (a committed
        offset beyond an event that was never applied means the event was skipped)."""
        try:
            located = await locate_records(self.infra.bootstrap, self.stack.input_topic, event_ids)
            committed = await committed_offsets(self.infra.bootstrap,
                                                f"e2e-{self.suffix}", self.stack.input_topic)
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            return f"(could not locate the events: {exc})"
        lines = [f"group committed offsets on the input topic: {dict(sorted(committed.items()))}"]
        for eid in event_ids:
            for partition, offset in located.get(eid, []):
                c = committed.get(partition)
                verdict = ("COMMITTED PAST without being applied" if c is not None and c > offset
                           else "not committed yet")
                lines.append(f"  {eid}: partition {partition} offset {offset} -> {verdict}")
        return "\n".join(lines)

    # -- the final check -----------------------------------------------------------------------

    async def verify(self, stream: Stream, *, timeout_s: float, settle_s: float = 3.0,
                     extra_dlq_ok: set[bytes] = frozenset()) -> LedgerReport:
        """Wait until every valid event is announced, let stragglers (a double apply) show up,
        then balance the ledger and check the dead letters."""
        try:
            self.result["drain_s"] = await self.wait_applied(
                stream.valid_ids, timeout_s=timeout_s, what="after the faults")
        except AssertionError as exc:  # add what the ledger says about the state reached
            try:
                snapshot = await asyncio.to_thread(read_store, self.infra.cassandra_port,
                                                   self.stack.keyspace)
                partial = check_ledger(stream.produced, list(self.changes), snapshot.history,
                                       no_model=NO_MODEL, raise_on_problems=False)
                self.result.update(partial.counts())
                ledger = (f"ledger at the time of failure: {len(partial.problems)} problem(s): "
                          + "; ".join(partial.problems[:8]))
            except Exception as err:  # noqa: BLE001 - diagnostics only
                ledger = f"(could not read the ledger: {err})"
            head, _, rest = str(exc).partition("\n")
            raise AssertionError(f"{head}\n{ledger}\n{rest}") from None
        await self.sleep(settle_s)
        snapshot = await asyncio.to_thread(read_store, self.infra.cassandra_port,
                                           self.stack.keyspace)
        try:
            report = check_ledger(stream.produced, list(self.changes), snapshot.history,
                                  current_by_user=snapshot.current,
                                  applied_by_user=snapshot.applied, no_model=NO_MODEL)
        except LedgerError as exc:
            self.result.update(exc.report.counts())
            self.fail(str(exc))
        self.result.update(report.counts())
        self.result["ledger_warnings"] = report.warnings[:20]
        if report.warnings:
            log.warning("%s: ledger warnings: %s", self.name, report.warnings[:10])

        dlq = await read_topic(self.infra.bootstrap, self.stack.dlq_topic, idle_s=1.5, max_s=20)
        values = Counter(m.value for m in dlq)
        invalid = set(stream.invalid_values)
        wrongly = [m for m in dlq if m.value not in invalid and m.value not in extra_dlq_ok]
        never = invalid - set(values)
        self.result["dead_letters"] = len(dlq)
        self.result["dead_letter_copies"] = len(dlq) - len(values)
        if wrongly:
            reasons = Counter(DeadLetter.from_headers(m.headers).error_type for m in wrongly)
            self.fail(f"{len(wrongly)} VALID record(s) were dead-lettered (reasons "
                      f"{dict(reasons)}), e.g. {wrongly[0].value[:160]!r}")
        if never:
            self.fail(f"{len(never)} of {len(invalid)} invalid records were never dead-lettered, "
                      f"e.g. {sorted(never)[0][:120]!r}")
        return report

    async def replay_and_verify(self, stream: Stream, report: LedgerReport) -> None:
        """Deliver every valid event once more (a producer retry storm / an offset reset) and
        check the ledger again: nothing may be applied twice.  This is where a version stored
        without its dedupe index rows would show up."""
        warnings_before = list(report.warnings)
        self.result["replay"] = {"records": len(stream.valid),
                                 "ledger_warnings_before": warnings_before}
        copies = Counter((c.user_id, c.version) for c in self.changes)
        latest: dict[str, int] = {}
        for c in self.changes:
            latest[c.user_id] = max(latest.get(c.user_id, 0), c.version)
        await self.feeder.send([(k, v) for k, v, _e in stream.valid])
        # redelivering a user's latest events republishes that version: the replay has reached
        # the end of a user once its latest version was announced once more
        deadline = time.monotonic() + 30
        done = 0
        while time.monotonic() < deadline:
            again = Counter((c.user_id, c.version) for c in self.changes)
            done = sum(again[(u, v)] > copies[(u, v)] for u, v in latest.items())
            if done == len(latest):
                break
            await self.sleep(0.5)
        self.result["replay"]["users_reannounced"] = f"{done}/{len(latest)}"
        try:
            await self.verify(stream, timeout_s=30)
        except AssertionError as exc:
            raise AssertionError(f"after replaying every event once more: {exc}\n"
                                 f"ledger warnings before the replay: {warnings_before}") from None

    def finish(self) -> None:
        self.result["outcome"] = "passed"


@pytest.fixture
async def scenario(request, private_infra, suite_report, tmp_path):
    name = request.node.name.removeprefix("test_")
    result = {"scenario": name, "outcome": "failed", "kills": 0, "rebalances": 0, "outages": 0}
    suite_report["scenarios"][name] = result
    sc = Scenario(name, private_infra, tmp_path, random.Random(f"{SEED}:{name}"), result)
    result["worker_logs"] = str(tmp_path)
    try:
        yield sc
    finally:
        result["seconds"] = round(time.monotonic() - sc.t0, 1)
        try:
            await asyncio.wait_for(sc.close(), 60)
        finally:
            result["worker_exit_codes"] = {p.name: p.popen.returncode for p in sc.workers}
            _write_report(suite_report)
            log.info("fault suite: %s", _summary_line(result))


# ---------------------------------------------------------------------------------------------
# a. repeated SIGKILL of the worker mid-stream
# ---------------------------------------------------------------------------------------------

N_KILLS = 3


@pytest.mark.timeout(200)
async def test_a_repeated_sigkill_and_restart(scenario):
    sc = scenario
    await sc.setup()
    stream = build_stream(SEED + 1, n_users=16, per_user=(10, 14))
    pod = f"{sc.name}-pod"  # restarted in place, as a StatefulSet/Deployment pod would be
    worker = sc.start_worker(pod)
    # slow enough to still be flowing at the last kill; the rest goes at once afterwards
    feed = sc.feed(stream.records, batch=2, interval_s=0.5)
    eid_of = {v: e for _k, v, e in stream.valid}

    def sent_ids() -> set[str]:
        return {eid_of[v] for _k, v in stream.records[: sc.feeder.sent] if v in eid_of}

    def idle() -> bool:
        return feed.done() and sent_ids() <= sc.applied

    kills = []
    for k in range(N_KILLS):
        base = len(sc.changes)
        working = await sc.wait_progress(
            base, timeout_s=60, what=f"{worker.name} to store versions before kill {k + 1}",
            idle=idle)
        await sc.sleep(sc.rng.uniform(0.2, 2.0))
        outstanding = len(sent_ids() - sc.applied)  # produced, not yet stored and announced
        await sc.kill(worker)
        kills.append({"worker": worker.name, "at_s": round(time.monotonic() - sc.t0, 1),
                      "versions_before": len(sc.changes), "events_outstanding": outstanding,
                      "records_produced": sc.feeder.sent,
                      "mid_stream": working and outstanding > 0 and not feed.done()})
        sc.result["kills"] = len(kills)
        await asyncio.sleep(sc.rng.uniform(0.0, 1.0))
        worker = sc.start_worker(pod)
        if not feed.done():
            kills[-1]["restart_to_first_consumed_s"] = await sc.first_consumed_s(worker)
    sc.result["kill_log"] = kills
    failover = [k["restart_to_first_consumed_s"] for k in kills
                if "restart_to_first_consumed_s" in k]
    sc.result["restart_to_first_consumed_s"] = failover
    await sc.wait_progress(len(sc.changes), timeout_s=60,
                           what=f"{worker.name} to resume after the last kill",
                           idle=idle)
    sc.feeder.rush.set()
    await feed
    report = await sc.verify(stream, timeout_s=90)
    assert sum(k["mid_stream"] for k in kills) >= N_KILLS - 1, \
        f"the kills did not land while events were flowing: {kills}"
    # a killed worker must not leave a version whose events a later redelivery applies again
    await sc.replay_and_verify(stream, report)
    sc.finish()


# ---------------------------------------------------------------------------------------------
# a2. long windows: input committed promptly while windows stay open; SIGKILL loses nothing
# ---------------------------------------------------------------------------------------------

COMMIT_INTERVAL_S = 1.0


@pytest.mark.timeout(150)
async def test_a2_long_windows_commit_promptly_and_sigkill_loses_nothing(scenario):
    """Windows stay open for 20 s; the input offsets must still be committed within a commit
    interval (+1 s) of being produced, with nothing applied yet.  Then a SIGKILL: the restarted
    worker re-reads no input (all of it was committed), rebuilds the open windows from the
    durable buffer, and applies every event once."""
    sc = scenario
    age_s = 20.0
    await sc.setup({"STREAMER_WINDOW__MAX_AGE_S": str(age_s), "STREAMER_WINDOW__MAX_EVENTS": "1000",
                    "STREAMER_KAFKA__COMMIT_INTERVAL_S": str(COMMIT_INTERVAL_S)})
    stream = build_stream(SEED + 6, n_users=24, per_user=(3, 5), invalid_rate=0.0)
    pod = f"{sc.name}-pod"
    worker = sc.start_worker(pod)
    await sc.feeder.send(stream.records)
    t_sent = time.monotonic()
    ends, committed, reached = await sc.wait_committed(timeout_s=30, poll_s=0.2)
    lag_s = round(time.monotonic() - t_sent, 1)
    applied_before_kill = len(sc.applied)
    sc.result["commit"] = {"end_offsets": ends, "committed": committed,
                           "produced_to_all_committed_s": lag_s,
                           "events_applied_when_committed": applied_before_kill}
    if not reached:
        sc.fail(f"input offsets not committed 30 s after producing: committed {committed}, "
                f"end offsets {ends}: open windows must not hold back commits")
    if applied_before_kill:
        sc.fail(f"{applied_before_kill} events applied before their {age_s:.0f}s windows closed")
    await sc.kill(worker)
    sc.result["kills"] = 1
    worker = sc.start_worker(pod)
    await sc.sleep(4.0)  # the restarted worker is up and owns its partitions by now
    reread = grep_log(worker, "first records consumed", limit=1)
    sc.result["records_reread_after_restart"] = 0 if not reread else reread[0][-160:]
    if reread:
        sc.fail(f"the restarted worker re-read committed input: {reread[0][-200:]}")
    await sc.verify(stream, timeout_s=age_s + 60)
    rebuilt = grep_log(worker, "rebuilt", limit=10)
    sc.result["windows_rebuilt_log"] = shorten(rebuilt, 160)
    if not rebuilt:
        sc.fail("the restarted worker did not rebuild pending windows from the buffer")
    sc.finish()


# ---------------------------------------------------------------------------------------------
# b. two workers in one group: a second joins mid-stream, later the first is SIGTERMed
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(200)
async def test_b_rebalance_two_workers(scenario):
    sc = scenario
    await sc.setup()
    stream = build_stream(SEED + 2, n_users=18, per_user=(8, 12))
    first = sc.start_worker()
    feed = sc.feed(stream.records, batch=3, interval_s=0.5)
    await sc.wait_progress(0, timeout_s=60, what=f"{first.name} to store versions")
    await sc.sleep(sc.rng.uniform(0.5, 2.0))
    second = sc.start_worker()
    sc.result["rebalances"] = 1
    joined_at = len(sc.changes)
    # the second worker must take part: wait until it finished a window (the flow logs each
    # one as "window done")
    deadline = time.monotonic() + 60
    while not grep_log(second, "window done", limit=1):
        if time.monotonic() > deadline:
            sc.fail(f"{second.name} finished no window within 60s of joining the group (no "
                    "'window done' line in its log): did the rebalance give it partitions?")
        await sc.sleep(0.5)
    await sc.sleep(sc.rng.uniform(1.0, 3.0))
    rc, took = await sc.terminate(first, grace_s=25)
    sc.result["rebalances"] = 2
    sc.result["sigterm"] = {"worker": first.name, "exit_code": rc, "stop_s": took}
    await sc.wait_progress(len(sc.changes), timeout_s=60,
                           what=f"{second.name} to continue alone after {first.name} left")
    sc.feeder.rush.set()
    await feed
    await sc.verify(stream, timeout_s=90)
    sc.result["windows_per_worker"] = {
        p.name: len(grep_log(p, "window done", limit=100000)) for p in (first, second)}
    sc.result["versions_before_second_joined"] = joined_at
    assert rc is not None and took < 25, f"{first.name} did not stop on SIGTERM ({rc}, {took}s)"
    sc.finish()


# ---------------------------------------------------------------------------------------------
# c. Cassandra killed mid-stream for 10-15 s, then restarted
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(220)
async def test_c_cassandra_outage(scenario, private_infra):
    sc = scenario
    await sc.setup()
    stream = build_stream(SEED + 3, n_users=16, per_user=(8, 12), invalid_rate=0.06)
    worker = sc.start_worker()
    feed = sc.feed(stream.records, batch=3, interval_s=0.5)
    await sc.wait_progress(0, timeout_s=60, what=f"{worker.name} to store versions")
    await sc.sleep(sc.rng.uniform(0.5, 2.0))
    hold_s = sc.rng.uniform(10.0, 15.0)
    before = len(sc.changes)
    t_down = time.monotonic()
    await asyncio.to_thread(private_infra.kill, "cassandra")
    sc.result["outages"] = 1
    try:
        await sc.sleep(hold_s)  # events keep flowing; the worker must stay up
        sent_during = sc.feeder.sent
        await asyncio.to_thread(private_infra.up, "cassandra")
    except AssertionError:
        raise
    except Exception as exc:  # noqa: BLE001
        sc.fail(f"could not restart Cassandra: {exc}\n"
                f"{private_infra.server_log_tail('cassandra')}")
    outage_s = time.monotonic() - t_down
    sc.result["outage"] = {"what": "cassandra SIGKILL + restart", "seconds": round(outage_s, 1),
                           "held_down_s": round(hold_s, 1), "versions_before": before,
                           "records_produced_by_restart": sent_during}
    sc.check_alive()
    await sc.wait_progress(len(sc.changes), timeout_s=90,
                           what=f"{worker.name} to resume storing by itself after Cassandra "
                                "came back")
    sc.result["outage"]["resumed_after_s"] = round(time.monotonic() - t_down, 1)
    sc.feeder.rush.set()
    await feed
    report = await sc.verify(stream, timeout_s=120)
    sc.check_alive()
    assert len(sc.workers) == 1 and worker.popen.poll() is None, "the worker was not restarted"
    sc.result["store_errors_logged"] = len(grep_log(worker, "StoreUnavailable", "unavailable",
                                                    limit=100000))

    # Replay after recovery: windows cut by the outage must not be applied again.
    await sc.replay_and_verify(stream, report)
    sc.finish()


# ---------------------------------------------------------------------------------------------
# d. the model server failing (HTTP 503), then answering garbage, then healthy again
# ---------------------------------------------------------------------------------------------

MALFORMED_KINDS = ("no_think_close", "double_think_close", "empty_summary", "truncated")


@pytest.mark.timeout(220)
async def test_d_model_errors_and_malformed_output(scenario):
    sc = scenario
    await sc.setup()
    stream = build_stream(SEED + 4, n_users=16, per_user=(8, 12))
    worker = sc.start_worker()
    feed = sc.feed(stream.records, batch=3, interval_s=0.5)
    await sc.wait_progress(0, timeout_s=60, what=f"{worker.name} to store versions")
    await sc.sleep(sc.rng.uniform(0.5, 1.5))

    async with httpx.AsyncClient(base_url=sc.standin_url, timeout=10) as http:
        async def faults(body: dict) -> dict:
            r = await http.post("/admin/faults", json=body)
            r.raise_for_status()
            return (await http.get("/admin/stats")).json()

        s0 = await faults({"error_rate": 1.0, "error_status": 503})
        t_err = time.time()
        await sc.sleep(sc.rng.uniform(9.0, 11.0))
        s1 = await faults({"malformed_rate": 1.0, "malformed_kind": MALFORMED_KINDS[0]})
        t_mal = time.time()
        for kind in MALFORMED_KINDS[1:]:
            await sc.sleep(sc.rng.uniform(2.0, 3.0))
            await faults({"malformed_rate": 1.0, "malformed_kind": kind})
        await sc.sleep(sc.rng.uniform(2.0, 3.0))
        s2 = await faults({})
        t_ok = time.time()
    sc.result["outages"] = 2
    errors_served = s1["by_status"].get("503", 0) - s0["by_status"].get("503", 0)
    garbage_served = s2["by_status"].get("200", 0) - s1["by_status"].get("200", 0)
    sc.result["model_faults"] = {
        "error_phase_s": round(t_mal - t_err, 1), "errors_served": errors_served,
        "malformed_phase_s": round(t_ok - t_mal, 1), "malformed_served": garbage_served,
        "kinds": list(MALFORMED_KINDS)}
    await sc.wait_progress(len(sc.changes), timeout_s=90,
                           what=f"{worker.name} to resume after the model recovered")
    sc.feeder.rush.set()
    await feed
    await sc.verify(stream, timeout_s=120)

    if errors_served < 1:
        sc.fail("the error phase was vacuous: the stand-in served no 503")
    if garbage_served < 1:
        sc.fail("the malformed phase was vacuous: the stand-in served no reply")
    # no model-written version may have been stored from a garbage reply
    snapshot = await asyncio.to_thread(read_store, sc.infra.cassandra_port, sc.stack.keyspace)
    margin = 2.0  # a call answered just before the switch may still be storing
    during = [r for h in snapshot.history.values() for r in h
              if r.model != NO_MODEL and t_mal + margin < r.created_at.timestamp() < t_ok]
    if during:
        r = during[0]
        sc.fail(f"{len(during)} model-written version(s) stored while every reply was malformed, "
                f"e.g. {r.user_id} v{r.version}: {r.summary[:160]!r}")
    reasoning = [r for h in snapshot.history.values() for r in h
                 if "The past preference summary" in r.summary or "On second thought" in r.summary]
    if reasoning:
        sc.fail(f"stand-in reasoning text stored as a summary: {reasoning[0].summary[:160]!r}")
    notices = await read_topic(sc.infra.bootstrap, sc.stack.kafka_settings().failures_topic,
                               idle_s=1.0, max_s=10)
    reasons = Counter(r for m in notices
                      for r in SummaryUpdateFailed.model_validate_json(m.value).reasons)
    sc.result["model_faults"]["failure_notices"] = len(notices)
    sc.result["model_faults"]["rejection_reasons"] = dict(reasons)
    sc.result["model_faults"]["update_failures_logged"] = len(
        grep_log(worker, "update failed", limit=100000))
    sc.finish()


# ---------------------------------------------------------------------------------------------
# e. duplicates: re-produced events (pending and already applied), the same event twice
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(200)
async def test_e_duplicate_events(scenario):
    sc = scenario
    await sc.setup()
    stream = build_stream(SEED + 5, n_users=16, per_user=(8, 12))
    worker = sc.start_worker()
    half = len(stream.records) // 2
    first, second = stream.records[:half], stream.records[half:]
    first_values = {v for _k, v in first}
    first_valid = [(k, v, e) for k, v, e in stream.valid if v in first_values]
    n_dup = max(4, round(0.10 * len(stream.valid)))
    # the same event twice in one batch, back to back (same partition, consecutive offsets)
    twins = sc.rng.sample(first_valid, 3)
    twin_values = {v for _k, v, _e in twins}
    batch1 = []
    for key, value in first:
        batch1.append((key, value))
        if value in twin_values:
            batch1.append((key, value))
    # re-produced immediately: most are still pending or in flight
    immediate = sc.rng.sample(first_valid, n_dup)
    await sc.feeder.send(batch1)
    await sc.feeder.send([(k, v) for k, v, _e in immediate])
    await sc.wait_applied({e for _k, _v, e in first_valid}, timeout_s=90,
                          what="first half (with immediate duplicates)")
    # re-produced after being applied, mixed into the second half; note which belong to the
    # user's latest version now (their redelivery republishes that version's change event)
    late = sc.rng.sample(first_valid, n_dup)
    latest = {}
    for c in sc.changes:
        if c.version >= latest.get(c.user_id, (0, ()))[0]:
            latest[c.user_id] = (c.version, c.event_ids)
    of_latest = sum(1 for k, _v, e in late if e in latest.get(k.decode(), (0, ()))[1])
    mixed = list(second)
    for key, value, _e in late:
        mixed.insert(sc.rng.randrange(len(mixed) + 1), (key, value))
    await sc.feeder.trickle(mixed, batch=6, interval_s=0.3)
    for k, _v, e in [*twins, *immediate, *late]:
        stream.produced[k.decode()].append(e)
    sc.result["duplicates_produced"] = {
        "same_batch_twins": len(twins), "immediate": len(immediate), "after_applied": len(late),
        "after_applied_of_latest_version": of_latest,
        "share_of_valid": round((len(twins) + len(immediate) + len(late)) / len(stream.valid), 2)}
    report = await sc.verify(stream, timeout_s=90)
    stats = grep_log(worker, "duplicate", limit=100000)
    sc.result["duplicate_lines_logged"] = len(stats)
    assert report.events_checked == len(stream.valid)
    sc.finish()


# ---------------------------------------------------------------------------------------------
# f. the Kafka broker killed mid-stream and restarted: the worker reconnects by itself
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(240)
async def test_f_broker_restart(scenario, private_infra):
    sc = scenario
    await sc.setup()
    stream = build_stream(SEED + 6, n_users=12, per_user=(8, 12), invalid_rate=0.05)
    worker = sc.start_worker()
    half = len(stream.records) // 2
    await sc.feeder.send(stream.records[:half])
    await sc.wait_progress(0, timeout_s=60, what=f"{worker.name} to store versions")
    t_down = time.monotonic()
    await asyncio.to_thread(private_infra.kill, "kafka")
    sc.result["outages"] = 1
    await sc.sleep(sc.rng.uniform(4.0, 8.0))
    try:
        await asyncio.to_thread(private_infra.up, "kafka")
    except Exception as exc:  # noqa: BLE001
        sc.fail(f"could not restart Kafka: {exc}\n{private_infra.server_log_tail('kafka')}")
    sc.result["outage"] = {"what": "kafka SIGKILL + restart",
                           "seconds": round(time.monotonic() - t_down, 1)}
    sc.check_alive()
    await sc.feeder.send(stream.records[half:])  # the rest goes to the restarted broker
    await sc.verify(stream, timeout_s=150)
    sc.check_alive()
    assert worker.popen.poll() is None, "the worker did not survive the broker restart"
    sc.finish()


# ---------------------------------------------------------------------------------------------
# g. a poison user among 20 healthy users: parked, and the partition keeps committing
# ---------------------------------------------------------------------------------------------

POISON_MARKER = "ZZ-REFUSED-BY-CONTENT-FILTER"


def poison_stream(user: str, n: int = 7) -> tuple[list[tuple[bytes, bytes]], list[str]]:
    """Valid pairwise choices of ``user`` whose item titles contain a marker the stand-in
    refuses (400), so every update of this user fails permanently."""
    records, ids = [], []
    for i in range(n):
        e = pairwise(f"{user}-{i:04d}", user_id=user, minutes=i,
                     chosen=item(f"pc{i}", title=f"{POISON_MARKER} chosen {i}", abstract="a"),
                     rejected=item(f"pr{i}", title=f"{POISON_MARKER} other {i}", abstract="b"))
        records.append((user.encode(), e.model_dump_json().encode()))
        ids.append(e.event_id)
    return records, ids


@pytest.mark.timeout(200)
async def test_g_poison_user_is_parked_and_partitions_keep_committing(scenario):
    sc = scenario
    await sc.setup({"STREAMER_WINDOW__PARK_AFTER_ATTEMPTS": "3",
                    "STREAMER_WINDOW__RETRY_BACKOFF_S": "0.3"})
    async with httpx.AsyncClient(base_url=sc.standin_url, timeout=10) as http:
        (await http.post("/admin/faults", json={"refuse_matching": POISON_MARKER})).raise_for_status()
    stream = build_stream(SEED + 7, n_users=20, per_user=(6, 10))
    poison, poison_ids = poison_stream("user-poison")
    records = list(stream.records)
    for i, rec in enumerate(poison):  # spread through the stream
        records.insert((i + 1) * len(records) // (len(poison) + 1), rec)
    sc.start_worker()
    feed = sc.feed(records, batch=6, interval_s=0.3)
    await feed
    await sc.verify(stream, timeout_s=90)
    leaked = set(poison_ids) & sc.applied
    if leaked:
        sc.fail(f"refused events were applied: {sorted(leaked)[:5]}")
    ends, committed, reached = await sc.wait_committed(timeout_s=20)
    sc.result["offsets"] = {"end": ends, "committed": committed}
    if not reached:
        sc.fail(f"a partition stopped committing behind the poison user: committed {committed}, "
                f"end offsets {ends}")
    # every poison event ends up parked (once its windows used their attempts)
    deadline = time.monotonic() + 60
    parked_ids: set[str] = set()
    while time.monotonic() < deadline:
        out = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "streamer", "parked", "list", "user-poison"],
            env={**os.environ, **sc.stack.env(0)}, capture_output=True, text=True, timeout=60)
        parked = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        parked_ids = {e for w in parked for e in w["event_ids"]}
        if parked_ids >= set(poison_ids):
            break
        await sc.sleep(1.0)
    notices = [SummaryUpdateFailed.model_validate_json(m.value) for m in await read_topic(
        sc.infra.bootstrap, sc.stack.kafka_settings().failures_topic, idle_s=1.0, max_s=10)]
    mine = [n for n in notices if n.user_id == "user-poison"]
    sc.result["poison"] = {"events": len(poison_ids), "parked_events": len(parked_ids),
                           "parked_windows": len(parked), "notices": len(mine),
                           "distinct_notice_ids": len({n.event_id for n in mine}),
                           "error_types": sorted({w["error_type"] for w in parked})}
    if parked_ids != set(poison_ids):
        sc.fail(f"poison events not all parked: missing {sorted(set(poison_ids) - parked_ids)}")
    if not 1 <= len({n.event_id for n in mine}) <= 5:
        sc.fail(f"{len(mine)} failure notices for the poison user (want 1..5)")
    if any(n.user_id != "user-poison" for n in notices):
        sc.fail("failure notices for healthy users")
    sc.finish()


# ---------------------------------------------------------------------------------------------
# h. a transactional upstream producer: one event per transaction, some aborted
# ---------------------------------------------------------------------------------------------


def renamed(valid: list[tuple[bytes, bytes, str]], prefix: str) -> list[tuple[bytes, bytes, str]]:
    """The same events under other user and event ids (no clash with another stream's ids)."""
    out = []
    for _k, v, e in valid:
        doc = json.loads(v)
        doc["user_id"], doc["event_id"] = f"{prefix}{doc['user_id']}", f"{prefix}{e}"
        out.append((doc["user_id"].encode(), encode_record(doc), doc["event_id"]))
    return out


@pytest.mark.timeout(200)
async def test_h_transactional_upstream_one_event_per_transaction(scenario):
    sc = scenario
    await sc.setup()
    stream = build_stream(SEED + 8, n_users=12, per_user=(6, 9), invalid_rate=0.0)
    aborted = renamed(build_stream(SEED + 80, n_users=4, per_user=(2, 3), invalid_rate=0.0).valid,
                      "aborted-")
    sc.start_worker()
    producer = AIOKafkaProducer(bootstrap_servers=sc.infra.bootstrap,
                                transactional_id=f"upstream-{sc.suffix}", acks="all")
    await producer.start()
    n_aborted = 0
    try:
        bad = iter(aborted)
        for i, (key, value) in enumerate(stream.records):
            async with producer.transaction():
                await producer.send_and_wait(sc.stack.input_topic, value, key=key)
            if i % 7 == 3:  # an aborted transaction: its record must never be applied
                k, v, _e = next(bad, (None, None, None))
                if k is not None:
                    await producer.begin_transaction()
                    await producer.send_and_wait(sc.stack.input_topic, v, key=k)
                    await producer.abort_transaction()
                    n_aborted += 1
    finally:
        await producer.stop()
    sc.feeder.sent += len(stream.records) + n_aborted
    await sc.verify(stream, timeout_s=90)
    aborted_ids = {e for _k, _v, e in aborted[:n_aborted]}
    leaked = aborted_ids & sc.applied
    # the last record of a partition is followed by its transaction's commit marker, which no
    # record moves past: committed may stay one short of the end offset
    ends, committed, reached = await sc.wait_committed(timeout_s=15, slack=1)
    sc.result["transactions"] = {"committed": len(stream.records), "aborted": n_aborted,
                                 "end_offsets": ends, "committed_offsets": committed}
    if leaked:
        sc.fail(f"records of aborted transactions were applied: {sorted(leaked)}")
    if not reached:
        sc.fail(f"commits stopped on transactional input: committed {committed}, ends {ends}")
    sc.finish()


# ---------------------------------------------------------------------------------------------
# i. a rebalance while model calls are slow: the old owner finishes calls after losing the
#    partition and must neither store nor publish them
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(220)
async def test_i_stale_owner_after_rebalance_is_fenced(scenario):
    sc = scenario
    await sc.setup()
    stream = build_stream(SEED + 9, n_users=24, per_user=(6, 9))
    first = sc.start_worker()
    async with httpx.AsyncClient(base_url=sc.standin_url, timeout=10) as http:
        (await http.post("/admin/faults", json={"extra_latency_ms": 6000})).raise_for_status()
        feed = sc.feed(stream.records, batch=8, interval_s=0.3)
        await sc.sleep(4.0)  # many windows in flight on the first worker, all slow
        second = sc.start_worker()
        sc.result["rebalances"] = 1
        await sc.sleep(12.0)  # the first worker's slow calls end after the hand-over
        (await http.post("/admin/faults", json={})).raise_for_status()
    await feed
    await sc.verify(stream, timeout_s=120)
    abandoned = grep_log(first, "update abandoned", limit=100000)
    sc.result["fenced_updates"] = len(abandoned)
    sc.result["windows_per_worker"] = {
        p.name: len(grep_log(p, "window done", limit=100000)) for p in (first, second)}
    # per user, versions on the summaries topic only go up, and the last is the highest stored
    snapshot = await asyncio.to_thread(read_store, sc.infra.cassandra_port, sc.stack.keyspace)
    seen: dict[str, int] = {}
    backwards = []
    for c in sc.changes:
        if c.version < seen.get(c.user_id, 0):
            backwards.append((c.user_id, seen[c.user_id], c.version))
        seen[c.user_id] = max(seen.get(c.user_id, 0), c.version)
    last = {}
    for c in sc.changes:
        last[c.user_id] = c.version
    stale_last = {u: (v, snapshot.history[u][-1].version) for u, v in last.items()
                  if snapshot.history.get(u) and v != snapshot.history[u][-1].version}
    sc.result["ordering"] = {"backwards": backwards[:10], "last_not_highest": stale_last}
    if backwards:
        sc.fail(f"versions went backwards on the summaries topic: {backwards[:5]}")
    if stale_last:
        sc.fail(f"last change event per user is not the highest stored version: {stale_last}")
    if not abandoned:
        sc.fail("the scenario was vacuous: no in-flight update of a revoked partition was fenced")
    sc.finish()


# ---------------------------------------------------------------------------------------------
# j. a replay of records older than the dedupe horizon: dead-lettered, never applied
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(150)
async def test_j_replay_beyond_the_dedupe_horizon(scenario):
    sc = scenario
    await sc.setup({"STREAMER_CASSANDRA__DEDUPE_TTL_S": "3600"})
    fresh = build_stream(SEED + 10, n_users=6, per_user=(4, 6), invalid_rate=0.0)
    old = renamed(build_stream(SEED + 11, n_users=4, per_user=(3, 4), invalid_rate=0.0).valid,
                  "old-")
    sc.start_worker()
    two_hours_ago = int((time.time() - 7200) * 1000)
    futures = [await sc.feeder.producer.send(sc.stack.input_topic, v, key=k,
                                             timestamp_ms=two_hours_ago)
               for k, v, _e in old]
    await asyncio.gather(*futures)
    await sc.feeder.send(fresh.records)
    report = await sc.verify(fresh, timeout_s=60, extra_dlq_ok={v for _k, v, _e in old})
    dlq = await read_topic(sc.infra.bootstrap, sc.stack.dlq_topic, idle_s=1.0, max_s=10)
    reasons = Counter(DeadLetter.from_headers(m.headers).error_type for m in dlq)
    leaked = {e for _k, _v, e in old} & sc.applied
    sc.result["beyond_horizon"] = {"records": len(old), "dead_letters": dict(reasons)}
    if leaked:
        sc.fail(f"records beyond the dedupe horizon were applied: {sorted(leaked)[:5]}")
    if reasons.get("beyond_dedupe_horizon", 0) != len(old):
        sc.fail(f"expected {len(old)} beyond_dedupe_horizon dead letters, got {dict(reasons)}")
    assert report.events_checked == len(fresh.valid)
    sc.finish()
