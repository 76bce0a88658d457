"""Storage contracts: what the profile store keeps per user and version."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from .base import Contract
from .events import EventId, QualityScore, TokenUsage, UserId, WindowFacts


class WindowTriple(Contract):
    """One interaction of a version's window as the model saw it (query, chosen, rejected)."""

    query: str
    chosen: str
    rejected: str


class SummaryRecord(Contract):
    """One version of a user's summary.

    Stored twice: as the user's current row and as row ``(user_id, version)`` of the history.
    Versions of a user start at 1 and are contiguous.
    """

    type: Literal["summary.record"] = "summary.record"
    schema_version: Literal[1] = 1
    user_id: UserId
    version: int = Field(ge=1)
    previous_version: int | None = Field(ge=1)
    summary: str
    model: str
    window_id: str = Field(description="Idempotency key of the window that produced it.")
    event_ids: tuple[EventId, ...]
    dropped_event_ids: tuple[EventId, ...] = ()
    usage: TokenUsage
    latency_ms: float = Field(ge=0)
    created_at: AwareDatetime
    quality: QualityScore | None = Field(
        default=None, description="The previous version's summary scored on this version's window.")
    triples: tuple[WindowTriple, ...] = Field(
        default=(), description="The window as the model saw it (kept when "
                                "STREAMER_QUALITY__KEEP_TRIPLES is on): with the previous "
                                "summary, the score and this summary, a training record.")
    window: WindowFacts | None = Field(
        default=None, description="What this version consumed: event count and times, input "
                                  "offset ranges (published with its change event).")
