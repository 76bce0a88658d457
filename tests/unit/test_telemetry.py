"""Observability: metrics per outcome, /metrics exposition, spans and links, JSON logs."""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streamer.adapters.kafka.publish import DeadLetterPublisher, KafkaChangePublisher
from streamer.adapters.memory.pending import MemoryPendingBuffer
from streamer.adapters.memory.publish import CollectingPublisher
from streamer.adapters.memory.store import InMemoryProfileStore
from streamer.app import build_flow
from streamer.devtools.fakes import ScriptedSummaryModel
from streamer.entrypoints.api import create_api
from streamer.logging import configure_logging
from streamer.services.flow import UpdateFlow
from streamer.services.updater import UpdatePolicy
from streamer.settings import Settings
from streamer.telemetry import Telemetry, setup_telemetry
from tests.factories import feedback, item, pairwise

pytestmark = pytest.mark.unit

SECRET_SUMMARY = "Enjoys-SECRET-SUMMARY-marker"
SECRET_TITLE = "SECRET-TITLE-marker"
IN_TRACE = "0af7651916cd43dd8448eb211c80319c"
IN_PARENT = f"00-{IN_TRACE}-b7ad6b7169203331-01"
INSTRUMENTS = (
    "streamer_updates_total", "streamer_window_events", "streamer_model_request_duration_seconds",
    "streamer_model_tokens_total", "streamer_pool_in_flight", "streamer_pool_saturated",
    "streamer_dead_letters_total", "streamer_freshness_seconds", "streamer_pending_events",
)


@dataclass
class FakeMessage:
    value: bytes
    key: bytes | None = None
    headers: list = field(default_factory=list)
    topic: str = "in"
    partition: int = 0
    offset: int = 0
    timestamp: float = field(default_factory=time.time)  # seconds, as faust's Message

    @property
    def tp(self) -> tuple[str, int]:
        return (self.topic, self.partition)


@dataclass
class FakeEvent:
    message: FakeMessage
    acked: bool = False

    def ack(self) -> None:
        self.acked = True


class Sent:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None, list]] = []

    async def __call__(self, topic: str, key: Any, value: Any, headers: Any) -> None:
        self.records.append((topic, key, value, list(headers)))


@pytest.fixture
def telemetry():
    exporter = InMemorySpanExporter()
    t = setup_telemetry(None, span_exporter=exporter)
    t.exporter = exporter  # type: ignore[attr-defined]
    yield t
    t.shutdown()


@pytest.fixture
def log_stream():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    yield stream
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved[0]:
        root.addHandler(h)
    root.setLevel(saved[1])


def make_flow(telemetry: Telemetry, script, sent: Sent) -> UpdateFlow:
    settings = Settings(window={"max_events": 1, "max_age_s": 60}, model={"max_concurrency": 2})
    flow = build_flow(settings, store=InMemoryProfileStore(), model=ScriptedSummaryModel(script),
                      publisher=KafkaChangePublisher(sent, "out", "failures"),
                      buffer=MemoryPendingBuffer(), dead_letters=DeadLetterPublisher(sent, "dlq"),
                      telemetry=telemetry)
    flow.scheduler.updater.policy = UpdatePolicy(output_backoff_s=0)
    return flow


async def handle(flow: UpdateFlow, *events: FakeEvent) -> None:
    """Intake (one batch), start the due windows, wait for their updates."""
    for i, ev in enumerate(events):
        ev.message.offset = i
    await flow.intake([ev.message for ev in events])
    while await flow.scheduler.tick():  # two update slots: start due windows until none is left
        await flow.scheduler.wait_idle()


def sample_value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            return float(value)
    return None


async def test_flow_records_metrics_per_outcome_and_dead_letters(telemetry):
    sent = Sent()
    flow = make_flow(telemetry, lambda req: "no think" if req.triples[0].event_id == "e3"
                     else "<think>t</think>\n\nLikes A.", sent)
    updated = FakeEvent(FakeMessage(pairwise("e1").model_dump_json().encode(), b"u1"))
    no_triples = FakeEvent(FakeMessage(feedback("e2", "dislike", user_id="u2").model_dump_json()
                                       .encode(), b"u2"))
    rejected = FakeEvent(FakeMessage(pairwise("e3", user_id="u3").model_dump_json().encode(), b"u3"))
    invalid = FakeEvent(FakeMessage(b"{not json", b"u4"))
    await handle(flow, updated, no_triples, rejected, invalid)

    text = telemetry.metrics_text().decode()
    for name in INSTRUMENTS:
        assert name in text, name
    assert sample_value(text, "streamer_updates_total", outcome="updated") == 1
    assert sample_value(text, "streamer_updates_total", outcome="no_triples") == 1
    assert sample_value(text, "streamer_updates_total", outcome="rejected_output") == 1
    assert sample_value(text, "streamer_dead_letters_total", reason="invalid_json") == 1
    assert sample_value(text, "streamer_model_tokens_total", kind="prompt") == 40  # 1 + 3 calls
    assert sample_value(text, "streamer_model_tokens_total", kind="completion") == 20
    assert sample_value(text, "streamer_model_request_duration_seconds_count") == 4
    assert sample_value(text, "streamer_window_events_count") == 3
    # freshness: one per event included in a change event (updated + carried-forward)
    assert sample_value(text, "streamer_freshness_seconds_count") == 2
    assert sample_value(text, "streamer_pending_events") == 1  # the rejected window waits
    assert sample_value(text, "streamer_pending_users") == 1
    assert sample_value(text, "streamer_pool_in_flight") == 0
    assert sample_value(text, "streamer_pool_saturated") == 0
    assert sample_value(text, "streamer_buffered_events_total") == 3
    # every record is buffered or dead-lettered: the whole batch is committable
    assert flow.positions == {("in", 0): 4}


async def test_window_span_links_inputs_and_change_event_carries_its_traceparent(telemetry):
    sent = Sent()
    flow = make_flow(telemetry, ["<think>t</think>\n\nLikes A."], sent)
    await handle(flow, FakeEvent(FakeMessage(pairwise("e1").model_dump_json().encode(), b"u1",
                                             headers=[("traceparent", IN_PARENT.encode())])))

    spans = {s.name: s for s in telemetry.exporter.get_finished_spans()}
    window = spans["update_window"]
    assert [format(link.context.trace_id, "032x") for link in window.links] == [IN_TRACE]
    assert window.parent is None and format(window.context.trace_id, "032x") != IN_TRACE
    assert window.attributes["prefstream.outcome"] == "updated"
    for child in ("model_call", "store_append", "publish_change"):
        assert spans[child].parent.span_id == window.context.span_id, child
        assert spans[child].context.trace_id == window.context.trace_id
    ((topic, key, _value, headers),) = sent.records
    assert topic == "out" and key == b"u1"
    traceparent = dict(headers)["traceparent"].decode()
    assert traceparent.startswith(f"00-{window.context.trace_id:032x}-{window.context.span_id:016x}-")


async def test_metrics_endpoint_of_the_read_api(telemetry):
    async def ready() -> dict:
        return {}

    app = create_api(InMemoryProfileStore(), CollectingPublisher(), token=None, ready=ready,
                     telemetry=telemetry)
    telemetry.record_update("updated", 3)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/metrics")
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        body = await resp.text()
    assert 'streamer_updates_total{outcome="updated"} 1.0' in body


async def test_logs_are_json_with_trace_ids_and_no_user_text_at_info(telemetry, log_stream):
    sent = Sent()
    flow = make_flow(telemetry, [f"<think>t</think>\n\n{SECRET_SUMMARY}"], sent)
    event = pairwise("e1", chosen=item("c1", title=SECRET_TITLE, abstract="chosen"))
    await handle(flow, FakeEvent(FakeMessage(event.model_dump_json().encode(), b"u1",
                                             headers=[("traceparent", IN_PARENT.encode())])))

    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert lines and all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    (applied,) = [line for line in lines if line["message"].startswith("window applied")]
    window = next(s for s in telemetry.exporter.get_finished_spans() if s.name == "update_window")
    assert applied["trace_id"] == format(window.context.trace_id, "032x")
    assert applied["span_id"] == format(window.context.span_id, "016x")
    assert applied["linked_trace_ids"] == [IN_TRACE]
    raw = log_stream.getvalue()
    assert SECRET_SUMMARY not in raw and SECRET_TITLE not in raw


def test_text_format_and_noop_telemetry():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("INFO", "text", stream=stream)
        logging.getLogger("x").info("hello")
        assert stream.getvalue().rstrip().endswith("INFO x hello")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    noop = Telemetry.noop()
    noop.record_update("updated", 1)
    assert noop.metrics_text() == b""
