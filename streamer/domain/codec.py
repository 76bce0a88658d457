"""Decode input records into interactions, with a specific reason when that is impossible.

Whatever the bytes of a record, :func:`decode_interaction` either returns an interaction or
raises :class:`InvalidEventError` (which the worker dead-letters); nothing else escapes it.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from itertools import accumulate
from typing import Any

from pydantic import ValidationError

from schemas import INTERACTION_ADAPTER, Interaction

from ..errors import InvalidEventError

SUPPORTED_TYPES = (
    "interaction.pairwise",
    "interaction.impression",
    "interaction.rating",
    "interaction.feedback",
    "interaction.click",
)
SUPPORTED_SCHEMA_VERSIONS = (1,)
MAX_MESSAGE_CHARS = 500
MAX_DEPTH = 32
"""Deepest array/object nesting accepted; a valid interaction needs 4 levels."""

# A JSON string (also one left unterminated at the end of the text), and anything that is not
# a bracket: removing both leaves exactly the structural brackets of the document.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def decode_interaction(
    key: bytes | None,
    value: bytes | None,
    *,
    max_bytes: int = 1_048_576,
    now: datetime | None = None,
    max_age_s: float | None = None,
    max_skew_s: float | None = None,
    require_key: bool = False,
    dedupe_horizon_s: float | None = None,
    max_depth: int = MAX_DEPTH,
) -> Interaction:
    """Decode one input record or raise :class:`InvalidEventError` with a stable code.

    With ``now``, ``occurred_at`` must lie within ``[now - max_age_s, now + max_skew_s]``, and,
    with ``dedupe_horizon_s``, not be older than ``now - dedupe_horizon_s`` (the time the
    event-id dedupe index remembers ids).  ``require_key`` refuses records without a key (the
    worker's input topic is keyed by user id; replayed files have no keys).
    """
    doc = parse_document(value, max_bytes=max_bytes, max_depth=max_depth)
    user_id = doc.get("user_id")
    if not isinstance(user_id, str) or not user_id.strip():
        raise InvalidEventError("missing_user_id", "field user_id is missing, empty or not a string")
    if doc.get("type") not in SUPPORTED_TYPES:
        raise InvalidEventError(
            "unknown_type",
            f"type {_short(doc.get('type'))} is not one of {', '.join(SUPPORTED_TYPES)}",
        )
    version = doc.get("schema_version", 1)
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise InvalidEventError(
            "unsupported_schema_version",
            f"schema_version {_short(version)} is not supported "
            f"(supported: {SUPPORTED_SCHEMA_VERSIONS})",
        )
    event = _validate(doc)
    if require_key and key is None:
        raise InvalidEventError(
            "missing_key",
            "record has no key; producers must key every record by its user_id "
            "(events are partitioned by user)",
        )
    if key is not None and key != event.user_id.encode("utf-8", "surrogatepass"):
        raise InvalidEventError(
            "key_mismatch", "record key must be the user_id (events are partitioned by user)"
        )
    if now is not None:
        age = (now - event.occurred_at).total_seconds()
        if max_age_s is not None and age > max_age_s:
            raise InvalidEventError(
                "timestamp_too_old",
                f"occurred_at {event.occurred_at.isoformat()} is {age / 86400:.0f} days old "
                f"(limit {max_age_s / 86400:.0f} days)",
            )
        if dedupe_horizon_s is not None and age > dedupe_horizon_s:
            raise InvalidEventError(
                "beyond_dedupe_horizon",
                f"occurred_at {event.occurred_at.isoformat()} is {_duration(age)} old, beyond "
                f"the {_duration(dedupe_horizon_s)} dedupe horizon: the event-id dedupe index "
                "only remembers ids for that long, so applying this event could apply it twice",
            )
        if max_skew_s is not None and -age > max_skew_s:
            raise InvalidEventError(
                "timestamp_in_future",
                f"occurred_at {event.occurred_at.isoformat()} is {-age:.0f}s in the future "
                f"(limit {max_skew_s:.0f}s)",
            )
    return event


def parse_document(value: bytes | None, *, max_bytes: int = 1_048_576,
                   max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """One record's value as a JSON object, or :class:`InvalidEventError`: no value, too large,
    not UTF-8, nested too deeply (checked before parsing), not JSON, not an object."""
    if value is None:
        raise InvalidEventError("empty_value", "record has no value (tombstone?)")
    if len(value) > max_bytes:
        raise InvalidEventError("oversized", f"value is {len(value)} bytes > limit {max_bytes}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEventError("invalid_utf8", f"value is not UTF-8: {exc}") from exc
    depth = _nesting_depth(text, max_depth)
    if depth > max_depth:
        raise InvalidEventError(
            "too_deep", f"JSON nests arrays/objects more than {max_depth} levels deep"
        )
    doc = _parse_json(text)
    if not isinstance(doc, dict):
        raise InvalidEventError("not_an_object", f"JSON value is a {type(doc).__name__}")
    return doc


def _nesting_depth(text: str, limit: int) -> int:
    """Deepest bracket nesting of ``text`` outside JSON strings, without recursion.

    An upper bound of the recursion ``json.loads`` (and validation) will need, computed before
    parsing so a hostile document is refused by its shape, not by the interpreter's stack.
    """
    if text.count("[") + text.count("{") <= limit:  # fast path: cannot be deeper than that
        return 0
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except MemoryError:
        raise  # not the record's fault: let the worker fail and retry it
    except RecursionError as exc:  # the depth check bounds nesting; this is belt and braces
        raise InvalidEventError("too_deep", "JSON nests too deeply to decode") from exc
    except json.JSONDecodeError as exc:
        raise InvalidEventError("invalid_json", f"value is not JSON: {_clean(str(exc))}") from exc
    except Exception as exc:  # e.g. ValueError: an integer literal of more than 4300 digits
        raise InvalidEventError(
            "invalid_json", f"value is not decodable JSON: {_clean(str(exc))[:MAX_MESSAGE_CHARS]}"
        ) from exc


def _validate(doc: dict[str, Any]) -> Interaction:
    try:
        return INTERACTION_ADAPTER.validate_python(doc)
    except ValidationError as exc:
        raise InvalidEventError("validation_error", _summarize(exc)) from exc
    except MemoryError:
        raise
    except RecursionError as exc:
        raise InvalidEventError("too_deep", "document nests too deeply to validate") from exc
    except Exception as exc:  # a validator bug must not stop the consumer either
        raise InvalidEventError(
            "validation_error",
            f"validation failed: {type(exc).__name__}: {_clean(str(exc))[:MAX_MESSAGE_CHARS]}",
        ) from exc


def _short(value: Any, limit: int = 80) -> str:
    """A bounded, printable rendering of an untrusted value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _clean(text: str) -> str:
    """``text`` with anything that is not encodable UTF-8 (lone surrogates) escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds:.0f}s"


def _summarize(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    return _clean("; ".join(parts))[:MAX_MESSAGE_CHARS]


def encode_model(model: Any) -> bytes:
    """Serialize a contract as compact JSON bytes."""
    return model.model_dump_json().encode()


def decode_buffered(value: bytes) -> Interaction:
    """A record from the pending buffer back to its interaction (validated at intake already,
    so no size, age or key rule applies again)."""
    return decode_interaction(None, value, max_bytes=len(value) + 1)
