"""`streamer import … --to kafka` against real Kafka: every converted event is produced to the
input topic, keyed by user id, in timestamp order, at the requested rate, and each one is a
valid interaction event."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from schemas import INTERACTION_ADAPTER
from streamer.adapters.kafka.admin import ensure_topics
from tests.integration.test_kafka_adapters import consume_all, kafka_settings  # noqa: F401

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "datasets"


async def test_import_movielens_to_kafka(kafka_settings):  # noqa: F811
    await ensure_topics(kafka_settings)
    env = {**os.environ, "STREAMER_KAFKA__BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
           "STREAMER_KAFKA__INPUT_TOPIC": kafka_settings.input_topic}
    proc = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "streamer", "import", "movielens",
        str(DATA / "movielens" / "ratings.csv"), str(DATA / "movielens" / "movies.csv"),
        "--to", "kafka", "--rate", "50", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "produced 5 events" in proc.stderr
    records = await consume_all(kafka_settings.bootstrap_servers, kafka_settings.input_topic, 5)
    events = [INTERACTION_ADAPTER.validate_json(r.value) for r in records]
    assert all(r.key == e.user_id.encode() for r, e in zip(records, events, strict=True))
    for user in {e.user_id for e in events}:  # one partition per user: its order is kept
        times = [e.occurred_at for e in events if e.user_id == user]
        assert times == sorted(times)
