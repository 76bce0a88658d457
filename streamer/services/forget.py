"""Deleting a user (the right to be forgotten): every stored version, the current row, the
applied-event index, pending and parked windows; then a deletion event and a tombstone.

Order, so that an update in flight for the user cannot leave anything behind:

1. the *suppression entry* (``STREAMER_FORGET__SUPPRESS_S``) is written first: from then on the
   updater drops the user's windows instead of storing them, and an update that had already
   passed that check deletes what it stored right after storing it (it checks again);
2. the store's rows are deleted, then the pending buffer's and the parked windows;
3. :class:`~schemas.SummaryDeleted` is published on the summaries topic, then a tombstone for the
   user's key (compaction removes every earlier record of the user).

A change event of the user that was already on its way when the deletion ran has an
``occurred_at`` at or before the deletion's: subscribers ignore it (``examples/subscriber.py``).
With suppression off (0), events still in flight may re-create the profile.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from schemas import SummaryDeleted

from ..ports import ChangePublisher, PendingBuffer, ReadableProfileStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ForgetReport:
    user_id: str
    deleted_versions: int
    deleted_pending_events: int
    suppressed_s: float
    event_id: str

    def as_dict(self) -> dict[str, object]:
        return {"user_id": self.user_id, "deleted_versions": self.deleted_versions,
                "deleted_pending_events": self.deleted_pending_events,
                "suppressed_s": self.suppressed_s, "event_id": self.event_id}


async def forget_user(store: ReadableProfileStore, buffer: PendingBuffer,
                      publisher: ChangePublisher, user_id: str, *, suppress_s: float,
                      now: datetime) -> ForgetReport:
    """Delete ``user_id`` everywhere (above); safe to run again (it deletes what is left and
    publishes the deletion again)."""
    versions = await store.forget(user_id, suppress_s=suppress_s)
    pending = await buffer.forget(user_id, partitions=(), stamp_us=int(now.timestamp() * 1e6))
    event = SummaryDeleted(
        event_id=str(uuid.uuid5(uuid.NAMESPACE_URL,
                                f"{user_id}/deleted/{int(now.timestamp() * 1000)}")),
        user_id=user_id, deleted_versions=versions, occurred_at=now)
    await publisher.publish_deleted(event)
    log.warning("user forgotten: user_id=%s versions=%d pending_events=%d suppressed_s=%g",
                user_id, versions, pending, suppress_s)
    return ForgetReport(user_id, versions, pending, suppress_s, event.event_id)
