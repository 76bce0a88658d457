"""`helm upgrade` safety on the real servers: the chart's pre-install/pre-upgrade hook Jobs
(`streamer migrate`, `streamer topics ensure`) run with the environment the chart renders for
them, in Helm's order, again and again, with changed values, and after a Job was killed half-way.

The hook Jobs are taken from `helm template` (the real helm of `make helm`); their command runs as
a subprocess with the hook ConfigMap's `STREAMER_*` data, the bootstrap/hosts pointed at the local
Kafka and Cassandra.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamer.adapters.cassandra.store import connect, migrations
from tests.chart.test_chart import MINIMAL, RELEASE, named, render

pytestmark = pytest.mark.integration

# Helm runs hooks by weight, then kind (its install order, of the kinds the chart has), then name
HOOK_ORDER_KINDS = ("Namespace", "ServiceAccount", "Secret", "ConfigMap", "Job")


def hook_jobs(sets: tuple[str, ...]) -> tuple[dict, list[dict]]:
    """(hook ConfigMap data, hook Jobs in Helm's execution order: weight, kind, name)."""
    docs = render((MINIMAL,), sets)
    hooks = [d for d in docs if "pre-upgrade" in
             (d["metadata"].get("annotations") or {}).get("helm.sh/hook", "").split(",")]

    def order(d: dict) -> tuple[int, int, str]:
        weight = int(d["metadata"]["annotations"].get("helm.sh/hook-weight", "0"))
        return weight, HOOK_ORDER_KINDS.index(d["kind"]), d["metadata"]["name"]

    hooks.sort(key=order)
    assert [d["kind"] for d in hooks][-2:] == ["Job", "Job"], "the Jobs run after their inputs"
    config = named(docs, "ConfigMap", f"{RELEASE}-prefstream-hooks")["data"]
    return config, [d for d in hooks if d["kind"] == "Job"]


def run_job(job: dict, config: dict, overrides: dict[str, str]) -> subprocess.CompletedProcess:
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    env.update(config)
    env.update(overrides)
    return subprocess.run([sys.executable, "-m", "streamer", *container["args"]], env=env,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture
def release_env(kafka_bootstrap, cassandra_port):
    """A fresh keyspace and topic names per test: what one `helm install` would own."""
    tag = uuid.uuid4().hex[:8]
    keyspace = f"up_{tag}"
    sets = (f"config.cassandra.keyspace={keyspace}",
            f"config.kafka.inputTopic=up-{tag}.in", f"config.kafka.outputTopic=up-{tag}.out",
            f"config.kafka.deadLetterTopic=up-{tag}.dlq",
            f"config.kafka.failuresTopic=up-{tag}.failures")
    overrides = {"STREAMER_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
                 "STREAMER_CASSANDRA__HOSTS": '["127.0.0.1"]',
                 "STREAMER_CASSANDRA__PORT": str(cassandra_port),
                 "STREAMER_KAFKA__REPLICATION_FACTOR": "1",  # one local broker
                 "STREAMER_CASSANDRA__REPLICATION":
                     "{'class': 'SimpleStrategy', 'replication_factor': 1}"}
    yield sets, overrides, keyspace, tag
    from streamer.settings import CassandraSettings

    cluster, session = connect(CassandraSettings(port=cassandra_port, keyspace=keyspace))
    session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
    cluster.shutdown()


def names(jobs: list[dict]) -> list[str]:
    return [j["spec"]["template"]["spec"]["containers"][0]["args"][0] for j in jobs]


def test_install_then_upgrades_run_the_hooks_idempotently(release_env):
    sets, overrides, keyspace, tag = release_env
    config, jobs = hook_jobs(sets)
    assert names(jobs) == ["migrate", "topics"]
    first = [run_job(j, config, overrides) for j in jobs]  # helm install
    for proc in first:
        assert proc.returncode == 0, proc.stderr
    assert "applied: 0001_summaries.cql" in first[0].stdout
    # helm upgrade, twice: same values, then values the hooks do not care about
    for upgrade_sets in (sets, (*sets, "config.window.maxEvents=16", "config.logLevel=DEBUG")):
        config, jobs = hook_jobs(upgrade_sets)
        again = [run_job(j, config, overrides) for j in jobs]
        for proc in again:
            assert proc.returncode == 0, proc.stderr
        assert "applied: nothing (schema up to date)" in again[0].stdout
        assert f"up-{tag}.in: partitions=8" in again[1].stdout


def test_an_upgrade_changing_partitions_stops_at_the_topic_check(release_env):
    """A partition count that differs from the live topics fails the hook (so the upgrade)
    instead of silently running workers against a layout the values do not describe."""
    sets, overrides, _, tag = release_env
    config, jobs = hook_jobs(sets)
    for proc in (run_job(j, config, overrides) for j in jobs):
        assert proc.returncode == 0, proc.stderr
    config, jobs = hook_jobs((*sets, "config.kafka.partitions=12"))
    migrate, topics = (run_job(j, config, overrides) for j in jobs)
    assert migrate.returncode == 0
    assert topics.returncode == 3, topics.stderr
    assert f"topic up-{tag}.in has 8 partitions, expected 12" in topics.stderr


async def test_the_topic_check_reports_a_wrong_cleanup_policy(release_env, kafka_bootstrap):
    """The summaries topic must be compacted (latest summary per user); one created by hand
    with `delete` is reported, not accepted."""
    sets, overrides, _, tag = release_env
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"up-{tag}.out", 8, 1,
                                            topic_configs={"cleanup.policy": "delete"})])
    finally:
        await admin.close()
    config, jobs = hook_jobs(sets)
    topics = run_job(jobs[1], config, overrides)
    assert topics.returncode == 3, topics.stdout + topics.stderr
    assert f"topic up-{tag}.out has cleanup.policy=delete, expected compact" in topics.stderr


def test_a_migration_job_killed_half_way_completes_on_retry(release_env, cassandra_port):
    """The Job is retried (backoffLimit) or the upgrade re-run after its pod was killed when a
    migration's statements had run but before it was recorded: the retry must finish it, not
    fail on columns and tables that are already there."""
    sets, overrides, keyspace, _ = release_env
    config, jobs = hook_jobs(sets)
    assert run_job(jobs[0], config, overrides).returncode == 0
    from streamer.settings import CassandraSettings

    cluster, session = connect(CassandraSettings(port=cassandra_port, keyspace=keyspace))
    try:
        for number, name, _ in migrations():
            session.execute(f"DELETE FROM {keyspace}.schema_migrations WHERE version = %s",
                            (number,))
            retry = run_job(jobs[0], config, overrides)
            assert retry.returncode == 0, f"{name}: {retry.stderr}"
            assert f"applied: {name}" in retry.stdout
    finally:
        cluster.shutdown()


def test_a_topic_the_broker_refuses_fails_the_hook_with_its_reason(release_env):
    """The CI values ask for replication 3; one local broker refuses that. The hook must fail
    and say why, not report the topics as created."""
    sets, overrides, _, tag = release_env
    config, jobs = hook_jobs(sets)
    assert config["STREAMER_KAFKA__REPLICATION_FACTOR"] == "3"
    proc = run_job(jobs[1], config, {**overrides, "STREAMER_KAFKA__REPLICATION_FACTOR": "3"})
    assert proc.returncode == 2, proc.stdout + proc.stderr  # a configuration error
    assert f"up-{tag}.in: InvalidReplicationFactorError" in proc.stderr
    assert "STREAMER_KAFKA__REPLICATION_FACTOR" in proc.stderr
    assert "created topic" not in proc.stderr
