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


async def test_change_events_carry_the_window_facts_and_the_previous_summary():
    """What a subscriber needs without a read: event count and times, the input offset range
    per partition, and the summary the version replaced."""
    from schemas import InputRange
    from streamer.app import baseline_model
    from tests.factories import T0

    settings = Settings(window={"max_events": 3})
    publisher = CollectingPublisher()
    f = build_flow(settings, store=InMemoryProfileStore(), model=baseline_model(),
                   publisher=publisher, buffer=MemoryPendingBuffer(), dead_letters=DLQ())
    records = [Rec(pairwise(f"e{n}", "u1", minutes=n).model_dump_json().encode(), b"u1",
                   time.time(), topic=settings.kafka.input_topic, partition=2, offset=offset)
               for n, offset in enumerate((5, 7, 9, 12, 13, 14))]
    await f.intake(records[:3])
    await f.scheduler.flush()
    await f.intake(records[3:])
    await f.scheduler.flush()
    first, second = publisher.events
    assert first.window.events == 3 and first.previous_summary is None
    assert (first.window.first_event_at, first.window.last_event_at) == (
        T0, T0.replace(minute=T0.minute + 2))
    assert first.window.inputs == (InputRange(topic=settings.kafka.input_topic, partition=2,
                                              first_offset=5, last_offset=9),)
    assert second.window.inputs[0].first_offset == 12 and second.window.inputs[0].last_offset == 14
    assert second.previous_summary == first.summary and second.previous_version == 1


async def test_a_mapping_converts_records_before_validation_and_dead_letters_with_its_reason():
    import json as _json
    from pathlib import Path

    from streamer.domain.codec import decode_buffered

    root = Path(__file__).resolve().parents[3]
    mapping = root / "deploy" / "mappings" / "segment-ecommerce.yaml"
    lines = (root / "deploy" / "mappings" / "samples" / "segment-ecommerce.jsonl").read_bytes()
    dlq = DLQ()
    # the samples have fixed dates: keep them acceptable in any year
    settings = Settings(window={"max_events": 100, "max_event_age_s": 20 * 365 * 86400},
                        mapping={"file": str(mapping)})
    f = build_flow(settings, store=InMemoryProfileStore(), model=ScriptedSummaryModel([]),
                   publisher=CollectingPublisher(), buffer=MemoryPendingBuffer(),
                   dead_letters=dlq)
    # a review the mapping converts but our contract refuses (a negative rating)
    negative = lines.splitlines()[3].replace(b'"rating":5', b'"rating":-1')
    recs = []
    for n, line in enumerate([*lines.splitlines(), negative]):
        doc = _json.loads(line)
        recs.append(Rec(line, (doc.get("userId") or "none").encode(), None, offset=n))
    await f.intake(recs)
    assert dlq.codes == ["mapping_missing_field", "mapping_no_rule", "mapping_bad_value",
                         "mapping_invalid_output"]
    assert f.stats.buffered == 5 and f.positions[("in", 0)] == len(recs)
    entries = await f.buffer.read("user-42", 100)
    assert sorted(e.event_id for e in entries) == ["seg-msg-1", "seg-msg-2", "seg-msg-3",
                                                   "seg-msg-4"]
    assert {decode_buffered(e.value).type for e in entries} == {
        "interaction.click", "interaction.feedback", "interaction.rating"}
