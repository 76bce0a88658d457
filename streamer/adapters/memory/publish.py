"""A change publisher that keeps what it is given, in order (replay reports, evaluation, tests)."""

from __future__ import annotations

from schemas import SummaryChanged, SummaryDeleted, SummaryUpdateFailed


class CollectingPublisher:
    """Collects published change events."""

    def __init__(self) -> None:
        self.events: list[SummaryChanged] = []
        self.failures: list[SummaryUpdateFailed] = []
        self.deleted: list[SummaryDeleted] = []

    async def publish(self, event: SummaryChanged) -> None:
        self.events.append(event)

    async def publish_failure(self, event: SummaryUpdateFailed) -> None:
        self.failures.append(event)

    async def publish_deleted(self, event: SummaryDeleted) -> None:
        self.deleted.append(event)
