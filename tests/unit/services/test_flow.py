"""Intake edges that depend on the record's Kafka timestamp (faust gives it in seconds)."""

import time
from dataclasses import dataclass, field

import pytest

from streamer.adapters.memory.pending import MemoryPendingBuffer
from streamer.adapters.memory.publish import CollectingPublisher
from streamer.adapters.memory.store import InMemoryProfileStore
from streamer.app import build_flow
from streamer.devtools.fakes import ScriptedSummaryModel
from streamer.settings import Settings
from tests.factories import pairwise

pytestmark = pytest.mark.unit


@dataclass
class Rec:
    value: bytes
    key: bytes
    timestamp: float | None
    topic: str = "in"
    partition: int = 0
    offset: int = 0
    headers: list = field(default_factory=list)


class DLQ:
    def __init__(self):
        self.codes = []

    async def publish(self, error, **kw):
        self.codes.append(error.code)


def flow(dlq):
    settings = Settings(cassandra={"dedupe_ttl_s": 3600}, window={"max_events": 100})
    return build_flow(settings, store=InMemoryProfileStore(), model=ScriptedSummaryModel([]),
                      publisher=CollectingPublisher(), buffer=MemoryPendingBuffer(),
                      dead_letters=dlq)


def rec(n, ts):
    e = pairwise(f"e{n}", "u1")
    return Rec(e.model_dump_json().encode(), b"u1", ts, offset=n)


async def test_records_within_the_dedupe_horizon_are_buffered_and_older_ones_dead_lettered():
    dlq = DLQ()
    f = flow(dlq)
    now = time.time()
    await f.intake([rec(0, now), rec(1, now - 3000), rec(2, now - 3700), rec(3, None)])
    assert dlq.codes == ["beyond_dedupe_horizon"]
    assert f.stats.buffered == 3
    assert f.positions[("in", 0)] == 4  # the dead-lettered record is committed too
