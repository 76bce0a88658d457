"""Deleting a user on the real servers (Cassandra and Kafka): everything of A goes (history,
current row, applied-event index, pending events and their index rows, parked windows), B is
untouched, a deletion event then a tombstone reach the summaries topic, a deletion racing an
in-flight update leaves nothing behind, and the CLI and the API do it as an operator would."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaProducer

from schemas import ce_attributes
from streamer.adapters.cassandra.pending import CassandraPendingBuffer
from streamer.adapters.kafka.admin import ensure_topics
from streamer.adapters.kafka.publish import KafkaChangePublisher
from streamer.entrypoints.api import create_api
from streamer.ports import ParkedWindow, PendingEntry, PendingUser
from streamer.services.forget import forget_user
from streamer.services.updater import Outcome, ProfileUpdater, UpdatePolicy
from tests.factories import pairwise
from tests.integration.test_kafka_adapters import consume_all, kafka_settings  # noqa: F401
from tests.unit.services.test_forget import GatedModel

pytestmark = pytest.mark.integration

ADMIN = "admin-token"


@pytest.fixture
async def kafka(kafka_settings):  # noqa: F811
    assert await ensure_topics(kafka_settings) == []
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers, acks="all")
    await producer.start()

    async def send(topic, key, value, headers):
        await producer.send_and_wait(topic, value, key=key, headers=list(headers))

    yield KafkaChangePublisher(send, kafka_settings.output_topic), kafka_settings
    await producer.stop()


def entry(user: str, n: int) -> PendingEntry:
    return PendingEntry(user, f"{user}-p{n}", "d", 1, 100 + n, b"{}", time.time())


async def seed(store, buffer, publisher, user: str) -> None:
    model = GatedModel()
    model.release.set()
    result = await ProfileUpdater(store, model, publisher, UpdatePolicy()).apply(
        user, [pairwise(f"{user}-1", user)])
    assert result.outcome is Outcome.UPDATED
    await buffer.add([entry(user, 1), entry(user, 2)], [PendingUser(user, 1, time.time())],
                     stamp_us=int(time.time() * 1e6))
    await buffer.park(ParkedWindow(user, "w1", 1, "OutputRejected", "r", 5, time.time(),
                                   (entry(user, 9),)))


async def nothing_of(store, buffer, user: str) -> None:
    assert await store.get_current(user) is None
    assert await store.history(user) == []
    assert await store.applied_event_ids(user, [f"{user}-1"]) == set()
    assert await buffer.read(user, 100) == [] and await buffer.parked(user) == []
    assert user not in {u.user_id for u in await buffer.users([1])}


async def test_forgetting_a_leaves_b_untouched_and_announces_it(store, kafka, unique):
    publisher, settings = kafka
    buffer = CassandraPendingBuffer.from_store(store)
    a, b = f"a-{unique}", f"b-{unique}"
    for user in (a, b):
        await seed(store, buffer, publisher, user)
    report = await forget_user(store, buffer, publisher, a, suppress_s=60,
                               now=datetime.now(UTC))
    assert (report.deleted_versions, report.deleted_pending_events) == (1, 3)
    await nothing_of(store, buffer, a)
    assert (await store.get_current(b)).version == 1 and len(await buffer.read(b, 100)) == 2
    assert len(await buffer.parked(b)) == 1 and b in {u.user_id for u in await buffer.users([1])}
    assert await store.suppressed(a) and not await store.suppressed(b)
    records = await consume_all(settings.bootstrap_servers, settings.output_topic, 4)
    of_a = [r for r in records if r.key == a.encode()]
    assert [ce_attributes(r.headers).get("type") for r in of_a] == [
        "io.prefstream.summary.updated.v1", "io.prefstream.summary.deleted.v1", None]
    assert of_a[-1].value is None  # the tombstone, last


async def test_a_deletion_racing_an_in_flight_update_leaves_nothing(store, kafka, unique):
    publisher, _ = kafka
    buffer = CassandraPendingBuffer.from_store(store)
    user = f"race-{unique}"
    model = GatedModel()
    updater = ProfileUpdater(store, model, publisher, UpdatePolicy(), check_forgotten=True)
    update = asyncio.create_task(updater.apply(user, [pairwise(f"{user}-1", user)]))
    await asyncio.wait_for(model.called.wait(), 30)  # in the model call, past the first check
    await forget_user(store, buffer, publisher, user, suppress_s=60, now=datetime.now(UTC))
    model.release.set()
    assert (await update).outcome is Outcome.SUPPRESSED
    await nothing_of(store, buffer, user)
    late = await updater.apply(user, [pairwise(f"{user}-2", user)])  # a late event
    assert late.outcome is Outcome.SUPPRESSED
    await nothing_of(store, buffer, user)


def test_streamer_forget_as_an_operator_runs_it(cassandra_settings, kafka_settings, unique):  # noqa: F811
    async def prepare():
        from streamer.adapters.cassandra.store import CassandraProfileStore

        s = await asyncio.to_thread(CassandraProfileStore.from_settings, cassandra_settings)
        try:
            await ensure_topics(kafka_settings)
            model = GatedModel()
            model.release.set()
            noop = KafkaChangePublisher(_discard, kafka_settings.output_topic)
            await ProfileUpdater(s, model, noop, UpdatePolicy()).apply(
                f"cli-{unique}", [pairwise("c-1", f"cli-{unique}")])
        finally:
            await s.aclose()

    asyncio.run(prepare())
    env = {**os.environ,
           "STREAMER_CASSANDRA__PORT": str(cassandra_settings.port),
           "STREAMER_CASSANDRA__KEYSPACE": cassandra_settings.keyspace,
           "STREAMER_KAFKA__BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
           "STREAMER_KAFKA__OUTPUT_TOPIC": kafka_settings.output_topic}
    proc = subprocess.run([sys.executable, "-m", "streamer", "forget", f"cli-{unique}", "--yes"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["deleted_versions"] == 1 and report["suppressed_s"] == 86400


async def _discard(topic, key, value, headers):
    return None


async def test_delete_route_needs_the_admin_token(store, kafka, unique):
    publisher, _ = kafka
    buffer = CassandraPendingBuffer.from_store(store)
    user = f"api-{unique}"
    await seed(store, buffer, publisher, user)

    async def ready():
        return {}

    app = create_api(store, publisher, token=ADMIN, read_tokens=("reader",), ready=ready,
                     buffer=buffer, forget_suppress_s=60)
    async with TestClient(TestServer(app)) as client:
        refused = await client.delete(f"/v1/users/{user}",
                                      headers={"Authorization": "Bearer reader"})
        assert refused.status == 401
        assert (await store.get_current(user)) is not None
        done = await client.delete(f"/v1/users/{user}",
                                   headers={"Authorization": f"Bearer {ADMIN}"})
        assert done.status == 200, await done.text()
        assert (await done.json())["deleted_versions"] == 1
        gone = await client.get(f"/v1/users/{user}/summary",
                                headers={"Authorization": f"Bearer {ADMIN}"})
        assert gone.status == 404
    await nothing_of(store, buffer, user)
