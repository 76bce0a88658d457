"""The read API's paths and bodies (the stored records themselves are ``schemas.SummaryRecord``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas import SummaryRecord

DEFAULT_HISTORY_LIMIT = 20
MAX_HISTORY_LIMIT = 100
MAX_VERSION = 2**31 - 1  # versions are a CQL ``int``

SUMMARY_PATH = "/v1/users/{user_id}/summary"
HISTORY_PATH = "/v1/users/{user_id}/history"
ROLLBACK_PATH = "/v1/users/{user_id}/rollback"
USER_PATH = "/v1/users/{user_id}"


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ErrorBody(_Body):
    """Every error answer."""

    error: str = Field(description="Stable machine-readable code, e.g. `not_found`.")
    message: str = Field(description="Human-readable explanation.")


class HistoryPage(_Body):
    """One page of a user's versions, newest first."""

    user_id: str
    items: list[SummaryRecord]
    next_before_version: int | None = Field(
        description="Pass as `before_version` to get the next (older) page; null on the last page."
    )


class RollbackRequest(_Body):
    """Restore an older version's summary as a new version."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    to_version: int = Field(
        ge=1, le=MAX_VERSION - 1, description="The version whose summary becomes current again."
    )
    reason: str = Field(min_length=1, max_length=1000, description="Why (logged for audit).")
    expected_version: int | None = Field(
        default=None,
        ge=1,
        le=MAX_VERSION,
        description="Optimistic concurrency: refuse (409) unless this is still the current version.",
    )


class Liveness(_Body):
    status: Literal["ok"] = "ok"


class Readiness(_Body):
    status: Literal["ready", "unavailable"]
    reason: str | None = None
    checks: dict[str, Any] = Field(default_factory=dict)
