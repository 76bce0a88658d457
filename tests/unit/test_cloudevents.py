"""Output events as CloudEvents (Kafka protocol binding, binary mode)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas import (
    CE_TYPES,
    SummaryChanged,
    SummaryDeleted,
    SummaryUpdateFailed,
    TokenUsage,
    ce_attributes,
    ce_headers,
)
from streamer.adapters.kafka.publish import KafkaChangePublisher

pytestmark = pytest.mark.unit

AT = datetime(2026, 3, 4, 5, 6, 7, 891_000, tzinfo=timezone(timedelta(hours=2)))


def changed() -> SummaryChanged:
    return SummaryChanged(event_id="0c7a…", user_id="u-1", version=3, previous_version=2,
                          summary="s", model="m", window_id="w", event_ids=("e",),
                          usage=TokenUsage(prompt_tokens=1, completion_tokens=1), latency_ms=1,
                          occurred_at=AT)


def test_binary_mode_headers_of_a_change_event():
    headers = dict(ce_headers(changed(), "/prefstream/eu"))
    assert headers == {
        "content-type": b"application/json", "ce_specversion": b"1.0", "ce_id": b"0c7a\xe2\x80\xa6",
        "ce_type": b"io.prefstream.summary.updated.v1", "ce_source": b"/prefstream/eu",
        "ce_subject": b"u-1", "ce_time": b"2026-03-04T03:06:07.891Z"}


def test_every_output_payload_has_a_versioned_type():
    assert set(CE_TYPES) == {SummaryChanged.model_fields["type"].default,
                             SummaryUpdateFailed.model_fields["type"].default,
                             SummaryDeleted.model_fields["type"].default}
    assert all(t.startswith("io.prefstream.") and t.endswith(".v1") for t in CE_TYPES.values())


def test_attributes_read_back():
    ce = ce_attributes([*ce_headers(changed(), "/p"), ("traceparent", b"00-x")])
    assert ce["id"] == "0c7a…" and ce["datacontenttype"] == "application/json"
    assert datetime.fromisoformat(ce["time"]) == AT.astimezone(UTC)
    assert "traceparent" not in ce and ce_attributes(None) == {}


async def test_the_publisher_sends_them_with_the_configured_source():
    sent = []

    async def send(topic, key, value, headers):
        sent.append((topic, key, value, headers))

    failed = SummaryUpdateFailed(event_id="f1", user_id="u-1", window_id="w", event_ids=("e",),
                                 kept_version=2, reasons=("no_think_close",), attempts=3,
                                 model="m", occurred_at=AT)
    pub = KafkaChangePublisher(send, "out", "failures", source="/prefstream/test")
    await pub.publish(changed())
    await pub.publish_failure(failed)
    (t1, k1, _, h1), (t2, _, _, h2) = sent
    assert (t1, k1, t2) == ("out", b"u-1", "failures")
    assert ce_attributes(h1)["source"] == "/prefstream/test"
    assert ce_attributes(h2)["type"] == "io.prefstream.summary.update_failed.v1"
    assert ("type", b"summary.changed") in h1  # the payload type header stays
