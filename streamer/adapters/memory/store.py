"""A versioned profile store in a dict: the same conflict rules as the real stores.

For the offline evaluation, for embedding in tests, and wherever nothing must outlive the
process.  Not safe across processes; history is kept in full."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime

from schemas import SummaryRecord

from ...errors import AsOfTooDeepError, VersionConflictError


class InMemoryProfileStore:
    """Versioned summaries in a dict; the same conflict rules as the real stores."""

    def __init__(self) -> None:
        self.versions: dict[str, list[SummaryRecord]] = defaultdict(list)
        self.digests: dict[tuple[str, str], str] = {}
        self.forgotten: dict[str, float] = {}  # user -> suppressed until (monotonic)

    async def get_current(self, user_id: str) -> SummaryRecord | None:
        history = self.versions.get(user_id)
        return history[-1] if history else None

    async def history(self, user_id: str) -> list[SummaryRecord]:
        return list(self.versions.get(user_id, []))

    async def mark_applied(self, user_id: str, event_ids, version: int, digests=None) -> None:
        for e in event_ids:  # the fake derives the index itself from the stored versions
            if digests and e in digests:
                self.digests.setdefault((user_id, e), digests[e])

    async def applied_event_ids(self, user_id: str, event_ids) -> set[str]:
        applied = {e for r in self.versions.get(user_id, []) for e in r.event_ids}
        return applied & set(event_ids)

    async def applied_digests(self, user_id: str, event_ids) -> dict[str, str]:
        return {e: self.digests.get((user_id, e), "")
                for e in await self.applied_event_ids(user_id, event_ids)}

    async def scan_history(self) -> AsyncIterator[SummaryRecord]:
        """Every stored version of every user, by user then version."""
        for user_id in sorted(self.versions):
            for record in list(self.versions[user_id]):
                yield record

    async def scan_current(self) -> AsyncIterator[SummaryRecord]:
        for user_id in sorted(self.versions):
            if self.versions[user_id]:
                yield self.versions[user_id][-1]

    async def history_page(
        self, user_id: str, limit: int, before_version: int | None = None
    ) -> list[SummaryRecord]:
        """Up to ``limit`` versions older than ``before_version`` (all when None), newest first."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        newest_first = reversed(self.versions.get(user_id, []))
        older = [r for r in newest_first if before_version is None or r.version < before_version]
        return older[:limit]

    async def forget(self, user_id: str, *, suppress_s: float = 0.0) -> int:
        if suppress_s > 0:
            self.forgotten[user_id] = time.monotonic() + suppress_s
        versions = len(self.versions.pop(user_id, []))
        for key in [k for k in self.digests if k[0] == user_id]:
            del self.digests[key]
        return versions

    async def suppressed(self, user_id: str) -> bool:
        return self.forgotten.get(user_id, 0.0) > time.monotonic()

    async def as_of(self, user_id: str, when: datetime, *,
                    max_versions: int | None = None) -> SummaryRecord | None:
        """The version that was current at ``when``: the highest version with created_at <= when
        (among the newest ``max_versions``; beyond them :class:`AsOfTooDeepError`)."""
        if when.tzinfo is None:
            raise ValueError("as_of needs a timezone-aware datetime")
        for examined, record in enumerate(reversed(self.versions.get(user_id, [])), start=1):
            if max_versions is not None and examined > max_versions:
                raise AsOfTooDeepError(f"as_of would examine more than {max_versions} versions")
            if record.created_at <= when:
                return record
        return None

    async def append(self, record: SummaryRecord, digests=None) -> None:
        current = await self.get_current(record.user_id)
        expected = current.version if current else None
        if expected != record.previous_version or record.version != (expected or 0) + 1:
            raise VersionConflictError(f"expected previous {expected}")
        self.versions[record.user_id].append(record)
        await self.mark_applied(record.user_id, record.event_ids, record.version, digests)

    async def aclose(self) -> None:
        return None
