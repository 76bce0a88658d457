"""The service's ports: what the domain needs from the outside world, as Protocols."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from schemas import SummaryChanged, SummaryRecord, SummaryUpdateFailed

from .domain.prompt import Prompt
from .domain.triples import Triple


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """What a summary model is asked: the rendered prompt, and its structured inputs."""

    prompt: Prompt
    previous_summary: str | None
    triples: tuple[Triple, ...]


@dataclass(frozen=True, slots=True)
class ModelReply:
    """Raw reply of one model call."""

    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    latency_ms: float = 0.0


class SummaryModel(Protocol):
    """Turns (previous summary, new triples) into a reply ``<think>...</think>summary``."""

    name: str

    async def generate(self, request: UpdateRequest) -> ModelReply: ...

    async def aclose(self) -> None: ...


class ProfileStore(Protocol):
    """Versioned summaries: a current row per user plus the full history."""

    async def get_current(self, user_id: str) -> SummaryRecord | None: ...

    async def append(self, record: SummaryRecord) -> None:
        """Store ``record`` as the user's next version.

        Must raise :class:`~streamer.errors.VersionConflictError` when version
        ``record.version`` already exists or the current version is not
        ``record.previous_version``: two writers can never both win.
        """
        ...

    async def applied_event_ids(self, user_id: str, event_ids: Sequence[str]) -> set[str]:
        """Which of ``event_ids`` a stored version of the user already consumed."""
        ...

    async def mark_applied(self, user_id: str, event_ids: Sequence[str], version: int) -> None:
        """Record in the dedupe index that ``version`` consumed ``event_ids``."""
        ...

    async def history(self, user_id: str) -> Sequence[SummaryRecord]:
        """All versions of a user, oldest first."""
        ...

    async def aclose(self) -> None: ...


class ChangePublisher(Protocol):
    """Publishes one change event per stored version, and notices of failed updates."""

    async def publish(self, event: SummaryChanged) -> None: ...

    async def publish_failure(self, event: SummaryUpdateFailed) -> None: ...
