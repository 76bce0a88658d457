"""`streamer parked list|retry|drop` against real Cassandra and Kafka, as an operator runs it."""

import asyncio
import json
import os
import subprocess
import sys
import time

from streamer.adapters.cassandra.pending import CassandraPendingBuffer
from streamer.adapters.kafka.admin import ensure_topics
from streamer.ports import ParkedWindow, PendingEntry
from tests.integration.test_kafka_adapters import consume_all, kafka_settings  # noqa: F401


def run_cli(env, *args):
    return subprocess.run([sys.executable, "-m", "streamer", "parked", *args],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


async def test_parked_windows_are_listed_retried_and_dropped(store, cassandra_settings,
                                                             kafka_bootstrap, kafka_settings):  # noqa: F811
    buffer = CassandraPendingBuffer.from_store(store)
    values = [json.dumps({"event_id": f"p-{i}", "n": i}).encode() for i in range(3)]
    entries = tuple(PendingEntry("pu", f"p-{i}", f"d{i}", 0, i, v, time.time())
                    for i, v in enumerate(values))
    for wid in ("w-retry", "w-drop"):
        await buffer.park(ParkedWindow("pu", wid, 0, "model_request", "400: refused", 5,
                                       time.time(), entries))
    assert await ensure_topics(kafka_settings) == []
    topic = kafka_settings.input_topic
    env = {"STREAMER_CASSANDRA__PORT": str(cassandra_settings.port),
           "STREAMER_CASSANDRA__KEYSPACE": cassandra_settings.keyspace,
           "STREAMER_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
           "STREAMER_KAFKA__INPUT_TOPIC": topic}

    listed = await asyncio.to_thread(run_cli, env, "list", "pu")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(r["window_id"] for r in rows) == ["w-drop", "w-retry"]
    assert rows[0]["event_ids"] == ["p-0", "p-1", "p-2"] and rows[0]["reason"] == "400: refused"

    retried = await asyncio.to_thread(run_cli, env, "retry", "pu", "--window-id", "w-retry")
    assert retried.returncode == 0, retried.stderr
    records = await consume_all(kafka_bootstrap, topic, 3)
    assert [m.value for m in records] == values and {m.key for m in records} == {b"pu"}

    dropped = await asyncio.to_thread(run_cli, env, "drop", "pu", "--window-id", "w-drop")
    assert dropped.returncode == 0, dropped.stderr
    assert await buffer.parked("pu") == []
    missing = await asyncio.to_thread(run_cli, env, "drop", "pu", "--window-id", "nope")
    assert missing.returncode == 1 and "no parked window" in missing.stderr
