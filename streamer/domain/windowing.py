"""Window identity.  When windows are due is decided by :mod:`streamer.domain.pending`; their
events live in the durable pending buffer."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def window_id(user_id: str, event_ids: Iterable[str]) -> str:
    """Idempotency key of a window: the same user and events always give the same id."""
    digest = hashlib.sha256(user_id.encode())
    for event_id in event_ids:
        digest.update(b"\x00" + event_id.encode())
    return digest.hexdigest()[:32]
