import json

import pytest

from schemas import DeadLetter
from streamer.adapters.kafka.codec import decode_interaction
from streamer.errors import InvalidEventError
from tests.factories import pairwise

pytestmark = pytest.mark.unit

VALID = pairwise("e1").model_dump(mode="json")


def enc(doc):
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (b"\xff\xfe not utf8", "invalid_utf8"),
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (enc({**VALID, "user_id": ""}), "missing_user_id"),
        (enc({k: v for k, v in VALID.items() if k != "user_id"}), "missing_user_id"),
        (enc({**VALID, "user_id": 42}), "missing_user_id"),
        (enc({**VALID, "type": "interaction.teleport"}), "unknown_type"),
        (enc({**VALID, "schema_version": 2}), "unsupported_schema_version"),
        (enc({**VALID, "occurred_at": "yesterday"}), "validation_error"),
        (enc({**VALID, "occurred_at": "2026-01-01T00:00:00"}), "validation_error"),
        (enc({**VALID, "surprise": 1}), "validation_error"),
        (None, "empty_value"),
    ],
)
def test_invalid_records_get_a_specific_code(value, code):
    with pytest.raises(InvalidEventError) as info:
        decode_interaction(b"u1", value)
    assert info.value.code == code


def test_oversized_and_key_mismatch():
    with pytest.raises(InvalidEventError, match="bytes > limit"):
        decode_interaction(None, enc(VALID), max_bytes=10)
    with pytest.raises(InvalidEventError) as info:
        decode_interaction(b"someone-else", enc(VALID))
    assert info.value.code == "key_mismatch"


def test_valid_record_round_trips():
    assert decode_interaction(b"u1", enc(VALID)) == pairwise("e1")
    assert decode_interaction(None, enc(VALID)).event_id == "e1"


def test_dead_letter_headers_round_trip():
    dl = DeadLetter(error_type="invalid_json", error_message="boom", source_topic="t",
                    source_partition=3, source_offset=42, failed_at="2026-01-01T00:00:00Z")
    headers = dl.to_headers()
    assert ("x-dlq-error-type", b"invalid_json") in headers
    assert DeadLetter.from_headers(headers) == dl


def test_timestamps_far_in_the_past_or_future_are_refused_with_specific_codes():
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 1, 1, tzinfo=UTC)
    old = enc({**VALID, "occurred_at": "2019-01-01T00:00:00Z"})
    future = enc({**VALID, "occurred_at": "2026-01-03T00:00:00Z"})
    kw = {"now": now, "max_age_s": 400 * 86400, "max_skew_s": 86400}
    with pytest.raises(InvalidEventError) as info:
        decode_interaction(b"u1", old, **kw)
    assert info.value.code == "timestamp_too_old" and "days old" in str(info.value)
    with pytest.raises(InvalidEventError) as info:
        decode_interaction(b"u1", future, **kw)
    assert info.value.code == "timestamp_in_future"
    ok = enc({**VALID, "occurred_at": (now - timedelta(days=30)).isoformat()})
    assert decode_interaction(b"u1", ok, **kw).event_id == "e1"
