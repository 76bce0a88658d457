"""The service's ports: what the services need from the outside world, as Protocols.

Adapters (``streamer/adapters/``) implement them; the composition root (``streamer/app.py``)
chooses which.  Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from schemas import SummaryChanged, SummaryDeleted, SummaryRecord, SummaryUpdateFailed

from .domain.judge import JudgeItem, Verdict
from .domain.prompt import Prompt
from .domain.triples import Triple


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """What a summary model is asked: the rendered prompt, and its structured inputs."""

    prompt: Prompt
    previous_summary: str | None
    triples: tuple[Triple, ...]
    user_id: str | None = None  # for routing (endpoint affinity); never sent to the model


@dataclass(frozen=True, slots=True)
class ModelReply:
    """Raw reply of one model call."""

    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    latency_ms: float = 0.0
    reasoning: str | None = None  # the thinking, when the server split it out of the text
    top_logprobs: tuple[tuple[tuple[str, float], ...], ...] = ()  # per token, when asked for


class SummaryModel(Protocol):
    """Turns (previous summary, new triples) into a reply ``<think>...</think>summary``."""

    name: str

    async def generate(self, request: UpdateRequest) -> ModelReply: ...

    async def aclose(self) -> None: ...


class ProfileStore(Protocol):
    """Versioned summaries: a current row per user plus the full history."""

    async def get_current(self, user_id: str) -> SummaryRecord | None: ...

    async def append(self, record: SummaryRecord,
                     digests: Mapping[str, str] | None = None) -> None:
        """Store ``record`` as the user's next version (``digests``: event id -> digest of the
        event's bytes, kept in the dedupe index).

        Must raise :class:`~streamer.errors.VersionConflictError` when version
        ``record.version`` already exists or the current version is not
        ``record.previous_version``: two writers can never both win.
        """
        ...

    async def applied_event_ids(self, user_id: str, event_ids: Sequence[str]) -> set[str]:
        """Which of ``event_ids`` a stored version of the user already consumed."""
        ...

    async def applied_digests(self, user_id: str, event_ids: Sequence[str]) -> dict[str, str]:
        """Of ``event_ids``, those already applied, with the digest recorded ("" if none)."""
        ...

    async def mark_applied(self, user_id: str, event_ids: Sequence[str], version: int,
                           digests: Mapping[str, str] | None = None) -> None:
        """Record in the dedupe index that ``version`` consumed ``event_ids``."""
        ...

    async def history(self, user_id: str) -> Sequence[SummaryRecord]:
        """All versions of a user, oldest first."""
        ...

    async def aclose(self) -> None: ...


class ReadableProfileStore(ProfileStore, Protocol):
    """A store that also serves the read API's paged and point-in-time reads, and deletes."""

    async def forget(self, user_id: str, *, suppress_s: float = 0.0) -> int:
        """Delete the user's history, current row and applied-event index, after recording
        the user as forgotten for ``suppress_s`` (0: not); returns the versions deleted."""
        ...

    async def suppressed(self, user_id: str) -> bool:
        """Whether the user was forgotten within its suppression time."""
        ...

    async def history_page(
        self, user_id: str, limit: int, before_version: int | None = None
    ) -> Sequence[SummaryRecord]:
        """Up to ``limit`` versions older than ``before_version`` (all when None), newest first."""
        ...

    async def as_of(self, user_id: str, when: datetime, *,
                    max_versions: int | None = None) -> SummaryRecord | None:
        """The highest version with ``created_at <= when`` (aware), or None; raises
        :class:`~streamer.errors.AsOfTooDeepError` past ``max_versions`` versions examined."""
        ...

    def scan_history(self) -> AsyncIterator[SummaryRecord]:
        """Every stored version of every user (reports and exports: a full scan)."""
        ...

    def scan_current(self) -> AsyncIterator[SummaryRecord]:
        """Every user's current version (exports: a full scan)."""
        ...


class Judge(Protocol):
    """Answers one pairwise question from a summary (the paper's judge, §6.1): a model over
    HTTP, or the labelled CPU baseline judge."""

    name: str

    async def judge(self, item: JudgeItem) -> Verdict: ...


TokenCounter = Callable[[Prompt], Awaitable[int | None]]
"""Counts a rendered prompt's tokens exactly (the pool's ``/tokenize``, or the real Qwen3
tokenizer); None when it cannot, and the conservative estimate is used instead."""


class RecordSender(Protocol):
    """Writes one record to a Kafka topic; returns once the broker acknowledged it.

    Raises :class:`~streamer.errors.BrokerUnavailableError` (retriable) or
    :class:`~streamer.errors.PublishRejectedError` (permanent)."""

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   headers: Sequence[tuple[str, bytes]]) -> None: ...

    async def aclose(self) -> None: ...


class CatalogView(Protocol):
    """A worker's materialized view of the item catalog topic (loaded, then followed)."""

    @property
    def caught_up(self) -> bool:
        """Every partition was read up to where it ended when the view started."""
        ...

    @property
    def items(self) -> int: ...

    def status(self) -> dict[str, Any]: ...

    async def run(self) -> None:
        """Load and follow the topic until :meth:`stop`."""
        ...

    async def stop(self) -> None: ...


class DeadLetterSink(Protocol):
    """Keeps an invalid input record with the reason it was refused (the dead-letter topic)."""

    async def publish(self, error: Any, *, key: bytes | None, value: bytes | None,
                      headers: Any, source_topic: str, partition: int, offset: int) -> Any: ...


class ChangePublisher(Protocol):
    """Publishes one change event per stored version, and notices of failed updates."""

    async def publish(self, event: SummaryChanged) -> None: ...

    async def publish_failure(self, event: SummaryUpdateFailed) -> None: ...

    async def publish_deleted(self, event: SummaryDeleted) -> None:
        """The deletion event, then a tombstone (null value) for the user's key."""
        ...


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """One valid input record in the durable pending buffer, as it arrived.

    ``value`` is the record's original bytes (decoded again when its window closes), ``digest``
    a hash of them: the buffer key is (user_id, event_id, digest), so a redelivery is an
    idempotent overwrite and a reused event id with other content is visible as a second row."""

    user_id: str
    event_id: str
    digest: str
    partition: int
    offset: int
    value: bytes
    buffered_at: float
    tokens: int = 0
    traceparent: str = ""  # W3C trace context of the input record, linked from the update span
    kafka_ts: float = 0.0  # the input record's Kafka timestamp (seconds), for freshness


@dataclass(frozen=True, slots=True)
class PendingUser:
    """A user with pending events, as recorded for a future owner of its partition."""

    user_id: str
    partition: int
    first_at: float


@dataclass(frozen=True, slots=True)
class ParkedWindow:
    """A window that could not be applied after bounded attempts, kept for an operator."""

    user_id: str
    window_id: str
    partition: int
    error_type: str
    reason: str
    attempts: int
    parked_at: float
    entries: tuple[PendingEntry, ...]


class PendingBuffer(Protocol):
    """Durable per-user pending windows (written before the input offset is committed)."""

    async def add(self, entries: Sequence[PendingEntry], new_users: Sequence[PendingUser],
                  *, stamp_us: int) -> None:
        """Upsert ``entries`` (idempotent) and record ``new_users`` in the partition index."""
        ...

    async def read(self, user_id: str, limit: int) -> list[PendingEntry]:
        """Up to ``limit`` pending entries of a user, oldest input offset first."""
        ...

    async def remove(self, user_id: str, entries: Sequence[PendingEntry], *,
                     user_done: PendingUser | None, stamp_us: int) -> None:
        """Delete applied entries; with ``user_done`` also the user's partition-index row.
        ``stamp_us`` orders index writes (a later add wins over an earlier removal)."""
        ...

    async def users(self, partitions: Sequence[int]) -> list[PendingUser]:
        """Users with pending events in ``partitions`` (a new owner rebuilds its index)."""
        ...

    async def park(self, window: ParkedWindow) -> None: ...

    async def parked(self, user_id: str | None = None, limit: int = 100) -> list[ParkedWindow]: ...

    async def unpark(self, user_id: str, window_id: str) -> None: ...

    async def forget(self, user_id: str, *, partitions: Sequence[int], stamp_us: int) -> int:
        """Delete the user's pending events, pending-user rows and parked windows; returns the
        events removed."""
        ...

    async def aclose(self) -> None: ...
