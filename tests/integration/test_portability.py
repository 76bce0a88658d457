"""`streamer export`, `streamer import-summaries` and `streamer rebuild-current` as an operator
runs them, on real Cassandra and Kafka: a full-history export restores into an empty keyspace
version for version, and the current rows rebuild from the compacted summaries topic."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid

import pytest

from streamer.adapters.cassandra.store import CassandraProfileStore, connect
from streamer.adapters.kafka.admin import ensure_topics
from streamer.adapters.kafka.publish import KafkaChangePublisher
from streamer.services.forget import forget_user
from streamer.services.updater import change_event
from streamer.settings import CassandraSettings
from tests.integration.test_kafka_adapters import kafka_settings, producer, sender  # noqa: F401
from tests.unit.entrypoints.test_api import record

pytestmark = pytest.mark.integration


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamer", *args, "--no-progress"],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=180)


@pytest.fixture
def empty_keyspace(cassandra_port):
    settings = CassandraSettings(port=cassandra_port, keyspace=f"imp_{uuid.uuid4().hex[:8]}")
    yield settings
    cluster, session = connect(settings)
    session.execute(f"DROP KEYSPACE IF EXISTS {settings.keyspace}")
    cluster.shutdown()


def env_of(settings: CassandraSettings) -> dict[str, str]:
    return {"STREAMER_CASSANDRA__PORT": str(settings.port),
            "STREAMER_CASSANDRA__KEYSPACE": settings.keyspace}


async def test_export_then_import_restores_every_version(store, cassandra_settings,
                                                         empty_keyspace, tmp_path):
    users = {f"exp-{uuid.uuid4().hex[:6]}": n for n in (3, 1, 4)}
    for user, n in users.items():
        for v in range(1, n + 1):
            await store.append(record(user, v))
    out = tmp_path / "all.jsonl"
    args = ["export", str(out), "--history", *(a for u in users for a in ("--user", u))]
    done = await asyncio.to_thread(cli, env_of(cassandra_settings), *args)
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == sum(users.values())
    imported = await asyncio.to_thread(cli, env_of(empty_keyspace), "import-summaries", str(out))
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout) == {"users": 3, "versions": 8, "skipped_existing_users": 0}
    target = await asyncio.to_thread(CassandraProfileStore.from_settings, empty_keyspace)
    try:
        for user in users:
            assert await target.history(user) == await store.history(user)
            assert await target.get_current(user) == await store.get_current(user)
        again = await asyncio.to_thread(cli, env_of(empty_keyspace), "import-summaries", str(out))
        assert again.returncode == 1 and "already has" in again.stderr
    finally:
        await target.aclose()
    current = tmp_path / "current.jsonl"
    only = await asyncio.to_thread(cli, env_of(cassandra_settings), "export", str(current),
                                   *(a for u in users for a in ("--user", u)))
    assert only.returncode == 0, only.stderr
    assert sorted(json.loads(line)["version"] for line in current.read_text().splitlines()) == [
        1, 3, 4]


async def test_rebuild_current_from_the_summaries_topic(store, cassandra_settings,
                                                        kafka_settings, producer):  # noqa: F811
    await ensure_topics(kafka_settings)
    topic = kafka_settings.output_topic
    pub = KafkaChangePublisher(sender(producer), topic)
    keep, drop = f"keep-{uuid.uuid4().hex[:6]}", f"drop-{uuid.uuid4().hex[:6]}"
    for user in (keep, drop):
        for v in (1, 2):
            r = record(user, v)
            await store.append(r)
            await pub.publish(change_event(r))
    await forget_user(store, _NoBuffer(), pub, drop, suppress_s=0,
                      now=record(drop, 2).created_at)
    # the latest versions are lost (e.g. the table restored from an older snapshot)
    cluster, session = connect(cassandra_settings)
    session.execute(f"DELETE FROM {cassandra_settings.keyspace}.profile_log "
                    "WHERE user_id = %s AND kind = 'v' AND seq = 2", (keep,))
    cluster.shutdown()
    assert (await store.get_current(keep)).version == 1
    env = {**env_of(cassandra_settings),
           "STREAMER_KAFKA__BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers}
    done = await asyncio.to_thread(cli, env, "rebuild-current", "--topic", topic)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == {"records": 6, "current_rows_written": 4, "users_deleted": 2,
                      "skipped": 0}  # 4 versions; the deletion event and the tombstone
    assert (await store.get_current(keep)).version == 2
    assert await store.history(keep) == [record(keep, 1), record(keep, 2)]
    assert await store.get_current(drop) is None


class _NoBuffer:
    async def forget(self, user_id, *, partitions, stamp_us) -> int:
        return 0
