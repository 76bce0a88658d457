"""The item catalog on a real broker: every worker's view loads the compacted catalog topic from
its beginning, is caught up only once it read what the topic held at its start, follows later
records (updates and tombstones), and skips invalid records without stopping."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from schemas import CatalogItem, Item
from streamer.adapters.kafka.admin import ensure_topics
from streamer.adapters.kafka.catalog import CatalogFollower
from streamer.errors import ConfigurationError
from tests.integration.test_kafka_adapters import kafka_settings, producer  # noqa: F401

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "datasets"


def value(item_id: str, title: str) -> bytes:
    return CatalogItem(domain="news", item=Item(id=item_id, title=title)).model_dump_json().encode()


async def eventually(check, timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.05)


async def test_the_view_loads_the_whole_topic_then_follows_it(kafka_settings, producer):  # noqa: F811
    topic = f"{kafka_settings.input_topic}.items"
    await ensure_topics(kafka_settings, catalog_topic=topic)
    for i in range(300):  # spread over the topic's 3 partitions by key
        await producer.send(topic, value(f"n{i}", f"old {i}"), key=f"n{i}".encode())
    await producer.send(topic, value("n0", "new 0"), key=b"n0")  # the later record wins
    await producer.send(topic, b"{not json", key=b"broken")  # skipped, counted
    await producer.send(topic, None, key=b"n1")  # a tombstone deletes
    await producer.flush()

    follower = CatalogFollower(kafka_settings, topic, max_records=50)
    await follower.start()
    assert not follower.caught_up  # nothing read yet
    task = asyncio.create_task(follower.run())
    try:
        await follower.wait_caught_up(60)
        c = follower.catalog
        assert len(c) == 299 and follower.items == 299
        assert c.get("n0").title == "new 0" and c.get("n1") is None and c.get("n300") is None
        assert follower.status() == {"topic": topic, "items": 299, "caught_up": True,
                                     "records": 302, "invalid": 1}
        # followed after loading: a new item, an update, a deletion
        await producer.send_and_wait(topic, value("n300", "late"), key=b"n300")
        await producer.send_and_wait(topic, value("n2", "changed"), key=b"n2")
        await producer.send_and_wait(topic, None, key=b"n3")
        await eventually(lambda: c.get("n3") is None and c.get("n300") is not None
                         and c.get("n2").title == "changed")
        assert len(c) == 299
    finally:
        await follower.stop()
        await asyncio.wait_for(task, 10)


async def test_an_empty_topic_is_caught_up_at_once_and_a_missing_one_says_what_to_do(
        kafka_settings):  # noqa: F811
    topic = f"{kafka_settings.input_topic}.items"
    missing = CatalogFollower(kafka_settings, f"{topic}.nope")
    with pytest.raises(ConfigurationError, match="streamer topics ensure"):
        await missing.start()
    await ensure_topics(kafka_settings, catalog_topic=topic)
    follower = CatalogFollower(kafka_settings, topic)
    await follower.start()
    try:
        assert follower.caught_up and follower.items == 0
    finally:
        await follower.stop()


async def test_catalog_load_publishes_an_import_file_keyed_by_item_id(kafka_settings, tmp_path):  # noqa: F811
    topic = f"{kafka_settings.input_topic}.items"
    await ensure_topics(kafka_settings, catalog_topic=topic)
    env = {**os.environ, "STREAMER_KAFKA__BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
           "STREAMER_CATALOG__TOPIC": topic}
    out = tmp_path / "mind.jsonl"
    subprocess.run([sys.executable, "-m", "streamer", "import", "mind",
                    str(DATA / "mind" / "behaviors.tsv"), str(DATA / "mind" / "news.tsv"),
                    "--ids-only", "--out", str(out), "--no-progress"],
                   env=env, check=True, capture_output=True, timeout=120)
    proc = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "streamer", "catalog", "load", str(out), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"published 5 items to {topic} (5 lines of other types passed over)" in proc.stderr
    follower = CatalogFollower(kafka_settings, topic)
    task = asyncio.create_task(follower.run())
    try:
        await follower.wait_caught_up(60)
        assert sorted(follower.catalog._items) == ["N1001", "N1002", "N1003", "N1004", "N1005"]
        assert follower.invalid == 0
    finally:
        await follower.stop()
        await asyncio.wait_for(task, 10)
