"""Read API over the profile store: current summary, history pages, point-in-time reads, rollback.

``create_api`` builds an aiohttp application from a store, a change publisher and a readiness
check; the composition root (``streamer/app.py``, ``build_api``) wires the configured store and a Kafka
sender.

Routes (all bodies JSON; errors are ``{"error": <code>, "message": <text>}``):

- ``GET  /v1/users/{user_id}/summary``: the current version (``get_current``, read from the
  history, the source of truth); with ``?as_of=<ISO 8601 with offset>`` the version that was
  current then (the highest version whose ``created_at <= as_of``).
- ``GET  /v1/users/{user_id}/history?limit=&before_version=``: versions newest first; the next
  page is ``before_version=<next_before_version>`` of the previous answer.
- ``POST /v1/users/{user_id}/rollback``: bearer-token guarded; stores a NEW version whose summary
  is ``to_version``'s and publishes its change event.  Disabled (403) when no token is set.
- ``GET  /livez``, ``GET /readyz``, ``GET /openapi.json`` (OpenAPI 3.1).

Reads are open; only the rollback writes.
"""

from ...services.rollback import ROLLBACK_MODEL
from .app import ApiError, Ready, create_api, parse_as_of, store_probe
from .bodies import (
    HISTORY_PATH,
    ROLLBACK_PATH,
    SUMMARY_PATH,
    USER_PATH,
    ErrorBody,
    HistoryPage,
    Liveness,
    Readiness,
    RollbackRequest,
)
from .openapi import openapi_document

__all__ = [
    "HISTORY_PATH",
    "ROLLBACK_MODEL",
    "ROLLBACK_PATH",
    "USER_PATH",
    "SUMMARY_PATH",
    "ApiError",
    "ErrorBody",
    "HistoryPage",
    "Liveness",
    "Readiness",
    "Ready",
    "RollbackRequest",
    "create_api",
    "openapi_document",
    "parse_as_of",
    "store_probe",
]
