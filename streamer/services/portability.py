"""Export, import and rebuild of stored summaries (`streamer export`, `streamer
import-summaries`, `streamer rebuild-current`).

* **Export** writes one :class:`~schemas.SummaryRecord` JSON per line: every user's current
  version, or the full history (``history=True``), filtered by users, a user prefix and a
  ``created_at`` range.
* **Import** restores a full-history export into a store that does not have those users yet,
  versions, ``created_at`` and event ids preserved (the dedupe index is rebuilt with them). A
  user's lines must be versions 1..n (any order, but together in the file, as exports write
  them); a user the store already has is skipped and reported, never merged.
* **Rebuild** writes the current rows from the compacted summaries topic: the latest change
  event of each user (``SummaryChanged`` carries the whole version), deletions honoured.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from schemas import SummaryChanged, SummaryDeleted, SummaryRecord, ce_attributes

from ..errors import ConfigurationError
from ..ports import ReadableProfileStore

DELETED_TYPE = "io.prefstream.summary.deleted.v1"


async def export_records(store: ReadableProfileStore, *, history: bool,
                         admits: Callable[[SummaryRecord], bool] = lambda r: True
                         ) -> AsyncIterator[SummaryRecord]:
    """The admitted versions: all of them (``history``) or each user's current one."""
    scan = store.scan_history() if history else store.scan_current()
    async for record in scan:
        if admits(record):
            yield record


def read_export(lines: Iterable[str]) -> Iterator[SummaryRecord]:
    """Parse an export file's lines (blank lines skipped); a bad line names its number."""
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield SummaryRecord.model_validate_json(line)
        except ValidationError as exc:
            raise ConfigurationError(f"line {n} is not a stored version: "
                                     f"{exc.errors()[0]['msg']}") from exc


@dataclass
class ImportReport:
    users: int = 0
    versions: int = 0
    skipped_existing: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"users": self.users, "versions": self.versions,
                "skipped_existing_users": len(self.skipped_existing)}


async def import_records(store: ReadableProfileStore, records: Iterable[SummaryRecord], *,
                         on_version: Any = None) -> ImportReport:
    """Restore full histories (above).  Raises :class:`ConfigurationError` for a user whose
    versions are not 1..n (a current-only export cannot be imported: export with --history)."""
    report = ImportReport()
    group: list[SummaryRecord] = []

    async def flush() -> None:
        if not group:
            return
        user = group[0].user_id
        versions = sorted(group, key=lambda r: r.version)
        if [r.version for r in versions] != list(range(1, len(versions) + 1)):
            raise ConfigurationError(
                f"user {user!r}: versions {[r.version for r in versions][:5]}... are not 1..n "
                "together in the file; import needs a full-history export (streamer export "
                "--history)")
        if await store.get_current(user) is not None:
            report.skipped_existing.append(user)
        else:
            for record in versions:
                await store.append(record)
                report.versions += 1
                if on_version is not None:
                    on_version()
            report.users += 1
        group.clear()

    for record in records:
        if group and record.user_id != group[0].user_id:
            await flush()
        group.append(record)
    await flush()
    return report


def record_of(event: SummaryChanged) -> SummaryRecord:
    """The stored version a change event announces (it carries every field but the triples)."""
    return SummaryRecord(
        user_id=event.user_id, version=event.version, previous_version=event.previous_version,
        summary=event.summary, model=event.model, window_id=event.window_id,
        event_ids=event.event_ids, dropped_event_ids=event.dropped_event_ids, usage=event.usage,
        latency_ms=event.latency_ms, created_at=event.occurred_at, quality=event.quality,
        window=event.window)


@dataclass
class RebuildReport:
    records: int = 0
    written: int = 0
    deleted: int = 0
    skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"records": self.records, "current_rows_written": self.written,
                "users_deleted": self.deleted, "skipped": self.skipped}


async def rebuild_current(store: Any, records: AsyncIterable[tuple[bytes | None, bytes | None,
                                                                    Any]]) -> RebuildReport:
    """Write each user's current row from the summaries topic, in topic order: a change event
    writes its version (a newer row already there stays), a deletion or a tombstone deletes the
    user's rows."""
    report = RebuildReport()
    async for key, value, headers in records:
        report.records += 1
        if value is None or ce_attributes(headers).get("type") == DELETED_TYPE:
            user = key.decode() if key else (SummaryDeleted.from_wire(value).user_id
                                             if value else None)
            if user is not None:
                await store.forget(user)
                report.deleted += 1
            continue
        try:
            event = SummaryChanged.from_wire(value)
        except (ValidationError, json.JSONDecodeError):
            report.skipped += 1  # a failure notice or a foreign record
            continue
        await store.write_current(record_of(event))
        report.written += 1
    return report
