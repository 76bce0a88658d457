"""Decode input records into interactions, with a specific reason when that is impossible."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from schemas import INTERACTION_ADAPTER, Interaction

from ...errors import InvalidEventError

SUPPORTED_TYPES = (
    "interaction.pairwise",
    "interaction.impression",
    "interaction.rating",
    "interaction.feedback",
    "interaction.click",
)
SUPPORTED_SCHEMA_VERSIONS = (1,)
MAX_MESSAGE_CHARS = 500


def decode_interaction(
    key: bytes | None,
    value: bytes | None,
    *,
    max_bytes: int = 1_048_576,
    now: datetime | None = None,
    max_age_s: float | None = None,
    max_skew_s: float | None = None,
) -> Interaction:
    """Decode one input record or raise :class:`InvalidEventError` with a stable code.

    With ``now``, ``occurred_at`` must lie within ``[now - max_age_s, now + max_skew_s]``.
    """
    if value is None:
        raise InvalidEventError("empty_value", "record has no value (tombstone?)")
    if len(value) > max_bytes:
        raise InvalidEventError("oversized", f"value is {len(value)} bytes > limit {max_bytes}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEventError("invalid_utf8", f"value is not UTF-8: {exc}") from exc
    try:
        doc: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidEventError("invalid_json", f"value is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidEventError("not_an_object", f"JSON value is a {type(doc).__name__}")
    user_id = doc.get("user_id")
    if not isinstance(user_id, str) or not user_id.strip():
        raise InvalidEventError("missing_user_id", "field user_id is missing, empty or not a string")
    if doc.get("type") not in SUPPORTED_TYPES:
        raise InvalidEventError(
            "unknown_type", f"type {doc.get('type')!r} is not one of {', '.join(SUPPORTED_TYPES)}"
        )
    version = doc.get("schema_version", 1)
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise InvalidEventError(
            "unsupported_schema_version",
            f"schema_version {version!r} is not supported (supported: {SUPPORTED_SCHEMA_VERSIONS})",
        )
    try:
        event = INTERACTION_ADAPTER.validate_python(doc)
    except ValidationError as exc:
        raise InvalidEventError("validation_error", _summarize(exc)) from exc
    if key is not None and key != event.user_id.encode():
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
        if max_skew_s is not None and -age > max_skew_s:
            raise InvalidEventError(
                "timestamp_in_future",
                f"occurred_at {event.occurred_at.isoformat()} is {-age:.0f}s in the future "
                f"(limit {max_skew_s:.0f}s)",
            )
    return event


def _summarize(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    return ("; ".join(parts))[:MAX_MESSAGE_CHARS]


def encode_model(model: Any) -> bytes:
    """Serialize a contract as compact JSON bytes."""
    return model.model_dump_json().encode()
