"""Rollback: restore an older version's summary as a NEW version, and publish its change event.

Used by the read API's token-guarded ``POST /v1/users/{id}/rollback``.  History is never
rewritten: the restored summary is stored as ``current + 1`` with ``model`` =
:data:`ROLLBACK_MODEL`, so subscribers see an ordinary newer version.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from schemas import SummaryRecord, TokenUsage

from ..domain.windowing import window_id
from ..errors import RollbackRefusedError, VersionConflictError
from ..ports import ChangePublisher, ReadableProfileStore
from .updater import change_event

log = logging.getLogger(__name__)

ROLLBACK_MODEL = "prefstream-rollback"
"""``model`` of a version written by a rollback (no model call: an older summary restored)."""


def to_millis(when: datetime) -> datetime:
    """Cassandra keeps timestamps in milliseconds: truncate so that the answer, the stored row
    and the change event carry the same ``created_at``."""
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


async def rollback(
    store: ReadableProfileStore,
    publisher: ChangePublisher,
    user_id: str,
    to_version: int,
    *,
    reason: str,
    expected_version: int | None,
    now: datetime,
    before_write: Callable[[], Awaitable[None]] | None = None,
) -> SummaryRecord:
    """Store ``to_version``'s summary as the user's next version; returns the new record.

    Raises :class:`RollbackRefusedError` with a stable ``code``: ``not_found``,
    ``version_conflict``, ``already_current``, ``version_not_found`` (nothing written),
    ``publisher_unavailable`` (``before_write`` failed; nothing written) or ``publish_failed``
    (stored, but the change event could not be published).
    """
    current = await store.get_current(user_id)
    if current is None:
        raise RollbackRefusedError("not_found", f"no summary for user {user_id!r}")
    if expected_version is not None and expected_version != current.version:
        raise RollbackRefusedError("version_conflict", f"current version is {current.version}, "
                                                       f"expected {expected_version}")
    if to_version == current.version:
        raise RollbackRefusedError("already_current",
                                   f"version {to_version} is already the current version")
    found = await store.history_page(user_id, 1, to_version + 1)
    if not found or found[0].version != to_version:
        raise RollbackRefusedError("version_not_found",
                                   f"user {user_id!r} has no version {to_version}")
    target = found[0]
    if before_write is not None:
        try:
            await before_write()
        except Exception as exc:
            log.warning("rollback refused, change publisher not ready: %s", exc)
            raise RollbackRefusedError(
                "publisher_unavailable",
                "cannot publish change events right now; nothing was written") from exc
    version = current.version + 1
    record = SummaryRecord(
        user_id=user_id,
        version=version,
        previous_version=current.version,
        summary=target.summary,
        model=ROLLBACK_MODEL,
        window_id=window_id(user_id, ("rollback", str(to_version), str(version))),
        event_ids=(),
        dropped_event_ids=(),
        usage=TokenUsage(prompt_tokens=0, completion_tokens=0),
        latency_ms=0.0,
        created_at=to_millis(now),
    )
    try:
        await store.append(record)
    except VersionConflictError as exc:
        raise RollbackRefusedError(
            "version_conflict",
            f"another writer stored version {version} first; reload and retry") from exc
    log.warning("rollback: user %r version %d restored as version %d (was %d); reason: %r",
                user_id, to_version, version, current.version, reason)
    try:
        await publisher.publish(change_event(record, current.summary))
    except Exception as exc:
        log.error("rollback: version %d of user %r is stored but its change event was not "
                  "published: %s", version, user_id, exc)
        raise RollbackRefusedError(
            "publish_failed",
            f"version {version} was stored but its change event could not be published") from exc
    return record
