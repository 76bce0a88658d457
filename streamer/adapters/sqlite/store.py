"""SQLite implementation of :class:`~streamer.ports.ProfileStore` for the embedded demo.

Same contract as the Cassandra store: a history table keyed by (user_id, version) whose primary
key makes a second writer of the same version fail, and a current table moved forward in the
same transaction.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

from schemas import SummaryRecord

from ...errors import AsOfTooDeepError, VersionConflictError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS summary_history (
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (user_id, version)
);
CREATE TABLE IF NOT EXISTS applied_events (
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    digest TEXT,
    PRIMARY KEY (user_id, event_id)
);
CREATE TABLE IF NOT EXISTS summaries_current (
    user_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS forgotten_users (
    user_id TEXT PRIMARY KEY,
    until REAL NOT NULL
);
"""


class SqliteProfileStore:
    """Versioned summaries in one SQLite file (or ``:memory:``)."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.executescript(_SCHEMA)

    async def get_current(self, user_id: str) -> SummaryRecord | None:
        row = self._db.execute(
            "SELECT record FROM summary_history WHERE user_id = ? ORDER BY version DESC LIMIT 1",
            (user_id,),
        ).fetchone()
        return SummaryRecord.model_validate_json(row[0]) if row else None

    async def history(self, user_id: str) -> list[SummaryRecord]:
        rows = self._db.execute(
            "SELECT record FROM summary_history WHERE user_id = ? ORDER BY version", (user_id,)
        ).fetchall()
        return [SummaryRecord.model_validate_json(r[0]) for r in rows]

    async def scan_history(self) -> AsyncIterator[SummaryRecord]:
        """Every stored version of every user, by user then version."""
        for (record,) in self._db.execute(
                "SELECT record FROM summary_history ORDER BY user_id, version").fetchall():
            yield SummaryRecord.model_validate_json(record)

    async def scan_current(self) -> AsyncIterator[SummaryRecord]:
        """Every user's current row, by user."""
        for (record,) in self._db.execute(
                "SELECT record FROM summaries_current ORDER BY user_id").fetchall():
            yield SummaryRecord.model_validate_json(record)

    async def write_current(self, record: SummaryRecord) -> None:
        """Write a current row only; a newer one stays."""
        with self._db:
            self._db.execute(
                "INSERT INTO summaries_current (user_id, version, record) VALUES (?, ?, ?) "
                "ON CONFLICT(user_id) DO UPDATE SET version = excluded.version, "
                "record = excluded.record WHERE excluded.version > summaries_current.version",
                (record.user_id, record.version, record.model_dump_json()))

    async def history_page(
        self, user_id: str, limit: int, before_version: int | None = None
    ) -> list[SummaryRecord]:
        """Up to ``limit`` versions older than ``before_version`` (all when None), newest first."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if before_version is None:
            rows = self._db.execute(
                "SELECT record FROM summary_history WHERE user_id = ? "
                "ORDER BY version DESC LIMIT ?",
                (user_id, limit),
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT record FROM summary_history WHERE user_id = ? AND version < ? "
                "ORDER BY version DESC LIMIT ?",
                (user_id, before_version, limit),
            ).fetchall()
        return [SummaryRecord.model_validate_json(r[0]) for r in rows]

    async def as_of(self, user_id: str, when: datetime, *,
                    max_versions: int | None = None) -> SummaryRecord | None:
        """The version that was current at ``when`` (among the newest ``max_versions``)."""
        for examined, record in enumerate(reversed(await self.history(user_id)), start=1):
            if max_versions is not None and examined > max_versions:
                raise AsOfTooDeepError(f"as_of would examine more than {max_versions} versions")
            if record.created_at <= when:
                return record
        return None

    async def users(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT user_id FROM summaries_current ORDER BY 1")]

    async def applied_event_ids(self, user_id: str, event_ids) -> set[str]:
        return set(await self.applied_digests(user_id, event_ids))

    async def applied_digests(self, user_id: str, event_ids) -> dict[str, str]:
        ids = list(event_ids)
        if not ids:
            return {}
        marks = ",".join("?" for _ in ids)
        rows = self._db.execute(
            f"SELECT event_id, digest FROM applied_events WHERE user_id = ? "
            f"AND event_id IN ({marks})",
            (user_id, *ids),
        ).fetchall()
        return {r[0]: r[1] or "" for r in rows}

    async def mark_applied(self, user_id: str, event_ids, version: int, digests=None) -> None:
        digests = digests or {}
        self._db.executemany(
            "INSERT OR IGNORE INTO applied_events (user_id, event_id, version, digest) "
            "VALUES (?, ?, ?, ?)",
            [(user_id, e, version, digests.get(e)) for e in event_ids],
        )

    async def append(self, record: SummaryRecord, digests=None) -> None:
        doc = record.model_dump_json()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(
                "SELECT MAX(version) FROM summary_history WHERE user_id = ?", (record.user_id,)
            ).fetchone()
            if row[0] != record.previous_version:
                raise VersionConflictError(
                    f"current version is {row[0]}, record expects {record.previous_version}"
                )
            self._db.execute(
                "INSERT INTO summary_history (user_id, version, record) VALUES (?, ?, ?)",
                (record.user_id, record.version, doc),
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO applied_events (user_id, event_id, version, digest) "
                "VALUES (?, ?, ?, ?)",
                [(record.user_id, e, record.version, (digests or {}).get(e))
                 for e in record.event_ids],
            )
            self._db.execute(
                "INSERT INTO summaries_current (user_id, version, record) VALUES (?, ?, ?) "
                "ON CONFLICT(user_id) DO UPDATE SET version = excluded.version, "
                "record = excluded.record WHERE excluded.version > summaries_current.version",
                (record.user_id, record.version, doc),
            )
            self._db.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            self._db.execute("ROLLBACK")
            raise VersionConflictError(f"version {record.version} already exists") from exc
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    async def forget(self, user_id: str, *, suppress_s: float = 0.0) -> int:
        with self._db:
            if suppress_s > 0:
                self._db.execute("INSERT OR REPLACE INTO forgotten_users (user_id, until) "
                                 "VALUES (?, ?)", (user_id, time.time() + suppress_s))
            versions = self._db.execute("SELECT COUNT(*) FROM summary_history WHERE user_id = ?",
                                        (user_id,)).fetchone()[0]
            for table in ("summary_history", "summaries_current", "applied_events"):
                self._db.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,))
        return versions

    async def suppressed(self, user_id: str) -> bool:
        row = self._db.execute("SELECT until FROM forgotten_users WHERE user_id = ?",
                               (user_id,)).fetchone()
        return bool(row) and row[0] > time.time()

    async def aclose(self) -> None:
        self._db.close()


