"""The CloudEvents Kafka protocol binding, binary content mode, of prefstream's output events.

Every change event and failure notice is a Kafka record whose value is the event's JSON (the
CloudEvents *data*) and whose headers carry the CloudEvents attributes (CloudEvents 1.0,
Kafka protocol binding, binary mode: ``ce_`` + attribute name, UTF-8 values):

====================  ==========================================================================
header                value
====================  ==========================================================================
``ce_specversion``    ``1.0``
``ce_id``             the event's deterministic ``event_id`` (UUIDv5 of ``user_id/version``): a
                      subscriber drops duplicates by it
``ce_type``           ``io.prefstream.summary.updated.v1`` / ``….update_failed.v1`` / ``….deleted.v1``
``ce_source``         the producing service (``STREAMER_KAFKA__EVENT_SOURCE``, ``/prefstream``)
``ce_subject``        the user id (also the record key)
``ce_time``           the event's ``occurred_at``, RFC 3339 in UTC
``content-type``      ``application/json`` (the binding's mapping of ``datacontenttype``)
====================  ==========================================================================

The type's ``v1`` suffix changes only with an incompatible payload; new optional fields may be
added to a ``v1`` payload at any time, so subscribers must ignore fields they do not know.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC
from typing import Any

from .events import SummaryChanged, SummaryDeleted, SummaryUpdateFailed

__all__ = [
    "CE_TYPES",
    "CONTENT_TYPE",
    "SPECVERSION",
    "ce_attributes",
    "ce_headers",
]

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
CE_TYPES: Mapping[str, str] = {
    "summary.changed": "io.prefstream.summary.updated.v1",
    "summary.update_failed": "io.prefstream.summary.update_failed.v1",
    "summary.deleted": "io.prefstream.summary.deleted.v1",
}
"""CloudEvents ``type`` of each payload's ``type`` field."""


def ce_headers(event: SummaryChanged | SummaryUpdateFailed | SummaryDeleted,
               source: str) -> list[tuple[str, bytes]]:
    """The binary-mode headers of one output event (``content-type`` included)."""
    at = event.occurred_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    attributes = {
        "specversion": SPECVERSION,
        "id": event.event_id,
        "type": CE_TYPES[event.type],
        "source": source,
        "subject": event.user_id,
        "time": at,
    }
    return [("content-type", CONTENT_TYPE.encode()),
            *((f"ce_{k}", v.encode()) for k, v in attributes.items())]


def ce_attributes(headers: Iterable[tuple[str, Any]] | None) -> dict[str, str]:
    """The CloudEvents attributes of a record's headers (``ce_`` stripped; ``content-type`` as
    ``datacontenttype``), for subscribers. Missing attributes are simply absent."""
    out: dict[str, str] = {}
    for key, value in headers or ():
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        if key.startswith("ce_"):
            out[key[3:]] = text
        elif key.lower() == "content-type":
            out["datacontenttype"] = text
    return out
