import json

import pytest

from schemas import DeadLetter
from streamer.domain.codec import decode_interaction
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


# --- hardening: missing keys, hostile nesting, the dedupe horizon, oversized dead letters ---


def test_missing_key_is_refused_only_when_a_key_is_required():
    with pytest.raises(InvalidEventError) as info:
        decode_interaction(None, enc(VALID), require_key=True)
    assert info.value.code == "missing_key" and "user_id" in str(info.value)
    assert decode_interaction(None, enc(VALID)).event_id == "e1"  # replay path: no keys
    assert decode_interaction(b"u1", enc(VALID), require_key=True).event_id == "e1"
    with pytest.raises(InvalidEventError) as info:
        decode_interaction(b"u2", enc(VALID), require_key=True)
    assert info.value.code == "key_mismatch"


def nested_dicts(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize(
    "value",
    [
        b"[" * 100_000,  # unterminated
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000,  # unterminated
        nested_dicts(100_000),
        enc({**VALID, "chosen": json.loads("[" * 40 + "]" * 40)}),  # deep inside a valid event
        enc({**VALID, "chosen": json.loads(nested_dicts(40))}),
    ],
    ids=["list-open", "list", "dict-open", "dict", "list-in-event", "dict-in-event"],
)
def test_deep_nesting_is_refused_by_shape_not_by_the_interpreter_stack(value):
    with pytest.raises(InvalidEventError) as info:
        decode_interaction(b"u1", value, max_bytes=2_000_000)
    assert info.value.code == "too_deep"


def test_nesting_limit_counts_only_structure_not_brackets_inside_strings():
    title = "[{" * 5_000 + '\\"]' + "[" * 100
    doc = {**VALID, "chosen": {**VALID["chosen"], "title": title}}
    assert decode_interaction(b"u1", enc(doc)).chosen.title == title
    assert decode_interaction(b"u1", enc({**VALID, "chosen": {**VALID["chosen"], "genres": ["x"]}}),
                              max_depth=3).event_id == "e1"
    with pytest.raises(InvalidEventError) as info:
        decode_interaction(b"u1", enc({**VALID, "chosen": {**VALID["chosen"], "genres": ["x"]}}),
                           max_depth=2)
    assert info.value.code == "too_deep"


def test_recursion_errors_from_the_parser_or_validator_do_not_escape(monkeypatch):
    from streamer.domain import codec

    def boom(*_a, **_kw):
        raise RecursionError("maximum recursion depth exceeded")

    with monkeypatch.context() as m:  # e.g. decoding while the caller's stack is nearly full
        m.setattr(codec.json, "loads", boom)
        with pytest.raises(InvalidEventError) as info:
            decode_interaction(b"u1", enc(VALID))
        assert info.value.code == "too_deep"

    class Adapter:
        def __init__(self, exc):
            self.exc = exc

        def validate_python(self, _doc):
            raise self.exc

    for exc, code in [(RecursionError(), "too_deep"), (ValueError("bug"), "validation_error")]:
        monkeypatch.setattr(codec, "INTERACTION_ADAPTER", Adapter(exc))
        with pytest.raises(InvalidEventError) as info:
            decode_interaction(b"u1", enc(VALID))
        assert info.value.code == code


def test_other_decode_errors_are_invalid_json():
    huge_int = enc({**VALID, "x": 0}).replace(b'"x": 0', b'"x": ' + b"9" * 5_000)
    with pytest.raises(InvalidEventError) as info:
        decode_interaction(b"u1", huge_int)
    assert info.value.code == "invalid_json" and "digits" in str(info.value)


def test_error_messages_are_bounded_and_encodable():
    huge_type = enc({**VALID, "type": "x" * 100_000})
    with pytest.raises(InvalidEventError) as info:
        decode_interaction(b"u1", huge_type)
    assert info.value.code == "unknown_type" and len(str(info.value)) < 500
    surrogate = enc({**VALID, "type": "\ud800"})  # json.dumps escapes it; json.loads restores it
    with pytest.raises(InvalidEventError) as info:
        decode_interaction(b"u1", surrogate)
    str(info.value).encode()  # no lone surrogate in the message


def test_events_older_than_the_dedupe_horizon_are_refused():
    from datetime import timedelta

    from tests.factories import T0

    now = T0 + timedelta(days=3)  # VALID occurred at T0
    with pytest.raises(InvalidEventError) as info:
        decode_interaction(b"u1", enc(VALID), now=now, dedupe_horizon_s=2 * 86400)
    assert info.value.code == "beyond_dedupe_horizon"
    assert "dedupe" in str(info.value) and "twice" in str(info.value)
    # timestamp_too_old keeps priority when both apply
    with pytest.raises(InvalidEventError) as info:
        decode_interaction(b"u1", enc(VALID), now=now, max_age_s=86400, dedupe_horizon_s=86400)
    assert info.value.code == "timestamp_too_old"
    assert decode_interaction(b"u1", enc(VALID), now=now, dedupe_horizon_s=4 * 86400).event_id == "e1"
    assert decode_interaction(b"u1", enc(VALID), dedupe_horizon_s=1).event_id == "e1"  # no `now`


def test_a_huge_but_flat_valid_record_is_still_fine():
    from schemas import Impression
    from tests.factories import T0, item

    text = "lorem [ipsum] {dolor} " * 60  # brackets in strings are not structure
    event = Impression(
        event_id="big", user_id="u1", occurred_at=T0, domain="news",
        clicked=tuple(item(f"c{i}", abstract=text, genres=("a", "b")) for i in range(100)),
        skipped=tuple(item(f"s{i}", abstract=text) for i in range(500)),
    )
    raw = event.model_dump_json().encode()
    assert 700_000 < len(raw) < 1_048_576
    assert decode_interaction(b"u1", raw, require_key=True) == event


def test_a_huge_flat_invalid_document_gets_its_ordinary_code():
    with pytest.raises(InvalidEventError) as info:
        decode_interaction(b"u1", json.dumps([[i] for i in range(100_000)]).encode())
    assert info.value.code == "not_an_object"


def test_mutated_records_only_ever_raise_invalid_event_error():
    import random

    rnd = random.Random(7)
    base = enc(VALID)
    alphabet = b'{}[]",:\\0123456789.eE-+tfnul \xff\xc3'
    for _ in range(3_000):
        raw = bytearray(base)
        for _ in range(rnd.randint(1, 8)):
            op, pos = rnd.random(), rnd.randrange(len(raw) + 1)
            if op < 0.4:
                raw[pos:pos] = bytes([rnd.choice(alphabet)]) * rnd.choice((1, 1, 2, 50))
            elif op < 0.7 and pos < len(raw):
                del raw[pos:pos + rnd.randint(1, 20)]
            elif pos < len(raw):
                raw[pos] = rnd.randrange(256)
        try:
            decode_interaction(b"u1", bytes(raw), require_key=True)
        except InvalidEventError:
            pass


def test_dead_letter_envelope_round_trips_the_new_fields():
    dl = DeadLetter(error_type="oversized", error_message="big", source_topic="t",
                    source_partition=0, source_offset=1, failed_at="2026-01-01T00:00:00Z",
                    original_size=3_000_000, truncated=True)
    headers = dl.to_headers()
    assert ("x-dlq-original-size", b"3000000") in headers
    assert ("x-dlq-truncated", b"true") in headers
    assert DeadLetter.from_headers(headers) == dl
    plain = dl.model_copy(update={"truncated": False})
    assert "x-dlq-truncated" not in dict(plain.to_headers())
    assert DeadLetter.from_headers(plain.to_headers()) == plain


class Sent:
    def __init__(self):
        self.records = []

    async def __call__(self, topic, key, value, headers):
        self.records.append((topic, key, value, list(headers)))


def publisher(**kw):
    from streamer.adapters.kafka.publish import DeadLetterPublisher

    sent = Sent()
    return DeadLetterPublisher(sent, "dlq", consumer_group="g", **kw), sent


async def dead_letter(pub, value, key=b"k", headers=(("trace", b"abc"),)):
    return await pub.publish(InvalidEventError("oversized", "value is too big"), key=key,
                             value=value, headers=list(headers), source_topic="in", partition=1,
                             offset=7)


async def test_small_dead_letters_are_untouched_and_carry_the_original_size():
    pub, sent = publisher()
    envelope = await dead_letter(pub, b"\xff{oops", headers=[("trace", b"abc"),
                                                              ("x-dlq-error-type", b"stale")])
    ((_, key, value, headers),) = sent.records
    assert (key, value) == (b"k", b"\xff{oops")
    assert ("trace", b"abc") in headers and ("x-dlq-original-size", b"6") in headers
    assert "x-dlq-truncated" not in dict(headers) and ("x-dlq-error-type", b"stale") not in headers
    assert DeadLetter.from_headers(headers) == envelope and not envelope.truncated
    await dead_letter(pub, None)  # a tombstone
    assert sent.records[1][2] is None and ("x-dlq-original-size", b"0") in sent.records[1][3]


async def test_oversized_dead_letters_are_truncated_below_the_limit():
    from streamer.adapters.kafka.publish import DeadLetterPublisher

    pub, sent = publisher(max_record_bytes=100_000)
    original = bytes(range(256)) * (3_000_000 // 256)
    envelope = await dead_letter(pub, original)
    ((_, key, value, headers),) = sent.records
    assert key == b"k" and original.startswith(value) and len(value) > 50_000
    size = DeadLetterPublisher.record_size(key, value, headers)
    assert size <= 100_000 - DeadLetterPublisher.SAFETY_MARGIN
    assert ("x-dlq-truncated", b"true") in headers
    assert ("x-dlq-original-size", str(len(original)).encode()) in headers
    assert ("trace", b"abc") in headers
    assert envelope.truncated and DeadLetter.from_headers(headers) == envelope


async def test_huge_keys_and_headers_are_cut_as_a_last_resort():
    from streamer.adapters.kafka.publish import DeadLetterPublisher

    pub, sent = publisher(max_record_bytes=100_000)
    await dead_letter(pub, b"v" * 10, key=b"k" * 50_000,
                      headers=[("trace", b"abc"), ("junk", b"j" * 200_000)])
    await dead_letter(pub, None, key=b"k" * 500_000)
    for _, key, value, headers in sent.records:
        assert DeadLetterPublisher.record_size(key, value, headers) <= 100_000 - 16 * 1024
        assert ("x-dlq-truncated", b"true") in headers
    (_, key0, value0, headers0), (_, key1, value1, _) = sent.records
    assert key0 == b"k" * 50_000 and value0 == b"" and "junk" not in dict(headers0)
    assert ("trace", b"abc") in headers0  # only the offending header was dropped
    assert value1 is None and 0 < len(key1) < 100_000


async def test_dead_letter_messages_are_bounded_and_encodable():
    pub, sent = publisher()
    await pub.publish(InvalidEventError("validation_error", "bad \ud800 " + "x" * 10_000),
                      key=None, value=b"{}", headers=[], source_topic="in", partition=0, offset=0)
    headers = dict(sent.records[0][3])
    assert len(headers["x-dlq-error-message"]) <= 4 * 500
    assert b"\\ud800" in headers["x-dlq-error-message"]


def test_a_limit_without_room_for_a_dead_letter_is_a_configuration_error():
    from streamer.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        publisher(max_record_bytes=20_000)
