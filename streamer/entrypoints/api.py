"""Read API over the profile store: current summary, history pages, point-in-time reads, rollback.

``create_api`` builds an aiohttp application from a store, a change publisher and a readiness
check; ``streamer api`` (``streamer/cli.py``) wires the configured store and a Kafka producer.

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

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.json_schema import models_json_schema

from schemas import SummaryRecord, TokenUsage
from schemas.events import UserId

from .. import __version__
from ..domain.windowing import window_id
from ..errors import StoreUnavailableError, VersionConflictError
from ..ports import ChangePublisher, ProfileStore, ReadableProfileStore
from ..services.updater import change_event
from ..telemetry import PROMETHEUS_CONTENT_TYPE, Telemetry

log = logging.getLogger(__name__)

ROLLBACK_MODEL = "prefstream-rollback"
"""``model`` of a version written by a rollback (no model call: an older summary restored)."""
DEFAULT_HISTORY_LIMIT = 20
MAX_HISTORY_LIMIT = 100
MAX_VERSION = 2**31 - 1  # versions are a CQL ``int``

SUMMARY_PATH = "/v1/users/{user_id}/summary"
HISTORY_PATH = "/v1/users/{user_id}/history"
ROLLBACK_PATH = "/v1/users/{user_id}/rollback"

Ready = Callable[[], Awaitable[dict]]


# --- API bodies (the stored records themselves are schemas.SummaryRecord) -----------------


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ErrorBody(_Body):
    """Every error answer."""

    error: str = Field(description="Stable machine-readable code, e.g. `not_found`.")
    message: str = Field(description="Human-readable explanation.")


class HistoryPage(_Body):
    """One page of a user's versions, newest first."""

    user_id: str
    items: list[SummaryRecord]
    next_before_version: int | None = Field(
        description="Pass as `before_version` to get the next (older) page; null on the last page."
    )


class RollbackRequest(_Body):
    """Restore an older version's summary as a new version."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    to_version: int = Field(
        ge=1, le=MAX_VERSION - 1, description="The version whose summary becomes current again."
    )
    reason: str = Field(min_length=1, max_length=1000, description="Why (logged for audit).")
    expected_version: int | None = Field(
        default=None,
        ge=1,
        le=MAX_VERSION,
        description="Optimistic concurrency: refuse (409) unless this is still the current version.",
    )


class Liveness(_Body):
    status: Literal["ok"] = "ok"


class Readiness(_Body):
    status: Literal["ready", "unavailable"]
    reason: str | None = None
    checks: dict[str, Any] = Field(default_factory=dict)


# --- helpers ---------------------------------------------------------------------------------

_USER_ID: TypeAdapter[str] = TypeAdapter(UserId)
_DIGITS = re.compile(r"[0-9]{1,10}")
_dumps = functools.partial(json.dumps, ensure_ascii=False)


class ApiError(Exception):
    """Turned into an ``ErrorBody`` answer by the error middleware."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None):
    return web.json_response(
        ErrorBody(error=code, message=message).model_dump(), status=status, headers=headers,
        dumps=_dumps,
    )


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json"), status=status, dumps=_dumps)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}
_PASSED_HEADERS = ("allow", "www-authenticate")


@web.middleware
async def _error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in _PASSED_HEADERS}
        return _error(exc.status, _HTTP_CODES.get(exc.status, "http_error"), exc.reason, headers)
    except StoreUnavailableError as exc:
        log.warning("store unavailable on %s %s: %s", request.method, request.path, exc)
        return _error(503, "store_unavailable", "the profile store is unavailable; retry later")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(500, "internal_error", "internal server error")


def _user_id(request: web.Request) -> str:
    raw = request.match_info["user_id"]
    try:
        return _USER_ID.validate_python(raw)
    except ValidationError as exc:
        raise ApiError(400, "invalid_user_id", "user_id must be 1-256 characters, not blank") \
            from exc


def _int_param(
    request: web.Request, name: str, *, default: int | None, minimum: int,
    maximum: int | None = None,
) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    value = int(raw) if _DIGITS.fullmatch(raw) else None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        bounds = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise ApiError(400, f"invalid_{name}", f"{name} must be an integer {bounds}")
    return value


def parse_as_of(raw: str) -> datetime:
    """An aware ISO 8601 timestamp; raises :class:`ApiError` (400) otherwise.

    A ``+hh:mm`` offset sent without URL-encoding arrives as a space (``+`` means space in a
    query string); with a ``T`` separator a space cannot be anything else, so it is restored.
    """
    text = raw.strip()
    if "T" in text:
        text = text.replace(" ", "+")
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ApiError(400, "invalid_as_of",
                       f"as_of is not an ISO 8601 timestamp: {raw!r}") from exc
    if when.tzinfo is None or when.utcoffset() is None:
        raise ApiError(400, "invalid_as_of",
                       "as_of must carry a timezone offset (e.g. 2026-01-01T12:00:00Z)")
    return when


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _to_millis(when: datetime) -> datetime:
    """Cassandra keeps timestamps in milliseconds: truncate so that the 201 answer, the stored
    row and the change event carry the same ``created_at``."""
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


def store_probe(store: ProfileStore, *, user_id: str = "__readyz__") -> Ready:
    """A readiness check: one trivial read (a single-partition lookup) on the store."""

    async def probe() -> dict:
        started = time.perf_counter()
        await store.get_current(user_id)
        return {"store": type(store).__name__,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2)}

    return probe


# --- the application -------------------------------------------------------------------------


class _Handlers:
    def __init__(
        self,
        store: ReadableProfileStore,
        publisher: ChangePublisher,
        *,
        token: str | None,
        ready: Ready,
        ready_timeout_s: float,
        before_write: Callable[[], Awaitable[None]] | None,
        clock: Callable[[], datetime],
        document: dict[str, Any],
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.token = token.encode() if token else None
        self.ready = ready
        self.ready_timeout_s = ready_timeout_s
        self.before_write = before_write
        self.clock = clock
        self.document = json.dumps(document, ensure_ascii=False)

    async def summary(self, request: web.Request) -> web.Response:
        user_id = _user_id(request)
        raw = request.query.get("as_of")
        if raw is not None:
            when = parse_as_of(raw)
            record = await self.store.as_of(user_id, when)
            if record is None:
                raise ApiError(404, "not_found",
                               f"user {user_id!r} had no summary at {when.isoformat()}")
        else:
            record = await self.store.get_current(user_id)
            if record is None:
                raise ApiError(404, "not_found", f"no summary for user {user_id!r}")
        return _json(record)

    async def history(self, request: web.Request) -> web.Response:
        user_id = _user_id(request)
        limit = _int_param(request, "limit", default=DEFAULT_HISTORY_LIMIT, minimum=1,
                           maximum=MAX_HISTORY_LIMIT)
        assert limit is not None
        before = _int_param(request, "before_version", default=None, minimum=1,
                            maximum=MAX_VERSION)
        items = list(await self.store.history_page(user_id, limit, before))
        more = len(items) == limit and items[-1].version > 1
        page = HistoryPage(user_id=user_id, items=items,
                           next_before_version=items[-1].version if more else None)
        return _json(page)

    def _authorize(self, request: web.Request) -> None:
        if self.token is None:
            raise ApiError(403, "writes_disabled",
                           "rollback is disabled: no API token is configured (STREAMER_API__TOKEN)")
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        presented = credentials.strip().encode()
        if scheme.lower() != "bearer" or not presented:
            raise ApiError(401, "unauthorized", "missing bearer token",
                           {"WWW-Authenticate": 'Bearer realm="prefstream"'})
        if not hmac.compare_digest(presented, self.token):
            raise ApiError(401, "unauthorized", "invalid bearer token",
                           {"WWW-Authenticate": 'Bearer realm="prefstream", error="invalid_token"'})

    async def rollback(self, request: web.Request) -> web.Response:
        self._authorize(request)
        user_id = _user_id(request)
        try:
            body = RollbackRequest.model_validate_json(await request.read())
        except ValidationError as exc:
            details = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
            )
            raise ApiError(400, "invalid_request", details) from exc
        current = await self.store.get_current(user_id)
        if current is None:
            raise ApiError(404, "not_found", f"no summary for user {user_id!r}")
        if body.expected_version is not None and body.expected_version != current.version:
            raise ApiError(409, "version_conflict",
                           f"current version is {current.version}, "
                           f"expected {body.expected_version}")
        if body.to_version == current.version:
            raise ApiError(409, "already_current",
                           f"version {body.to_version} is already the current version")
        found = await self.store.history_page(user_id, 1, body.to_version + 1)
        if not found or found[0].version != body.to_version:
            raise ApiError(404, "version_not_found",
                           f"user {user_id!r} has no version {body.to_version}")
        target = found[0]
        if self.before_write is not None:
            try:
                await self.before_write()
            except Exception as exc:
                log.warning("rollback refused, change publisher not ready: %s", exc)
                raise ApiError(503, "publisher_unavailable",
                               "cannot publish change events right now; nothing was written") \
                    from exc
        version = current.version + 1
        record = SummaryRecord(
            user_id=user_id,
            version=version,
            previous_version=current.version,
            summary=target.summary,
            model=ROLLBACK_MODEL,
            window_id=window_id(user_id, ("rollback", str(body.to_version), str(version))),
            event_ids=(),
            dropped_event_ids=(),
            usage=TokenUsage(prompt_tokens=0, completion_tokens=0),
            latency_ms=0.0,
            created_at=_to_millis(self.clock()),
        )
        try:
            await self.store.append(record)
        except VersionConflictError as exc:
            raise ApiError(409, "version_conflict",
                           f"another writer stored version {version} first; reload and retry") \
                from exc
        log.warning("rollback: user %r version %d restored as version %d (was %d); reason: %r",
                    user_id, body.to_version, version, current.version, body.reason)
        try:
            await self.publisher.publish(change_event(record))
        except Exception as exc:
            log.error("rollback: version %d of user %r is stored but its change event was not "
                      "published: %s", version, user_id, exc)
            raise ApiError(502, "publish_failed",
                           f"version {version} was stored but its change event could not be "
                           "published") from exc
        return _json(record, status=201)

    async def livez(self, request: web.Request) -> web.Response:
        return _json(Liveness())

    async def readyz(self, request: web.Request) -> web.Response:
        try:
            checks = await asyncio.wait_for(self.ready(), timeout=self.ready_timeout_s)
        except TimeoutError:
            reason = f"readiness check timed out after {self.ready_timeout_s:g}s"
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"[:500]
        else:
            return _json(Readiness(status="ready", checks=dict(checks or {})))
        return _json(Readiness(status="unavailable", reason=reason), status=503)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(text=self.document, content_type="application/json")


def create_api(
    store: ReadableProfileStore,
    publisher: ChangePublisher,
    *,
    token: str | None,
    ready: Ready,
    ready_timeout_s: float = 5.0,
    before_write: Callable[[], Awaitable[None]] | None = None,
    clock: Callable[[], datetime] = _utcnow,
    telemetry: Telemetry | None = None,
) -> web.Application:
    """The read API as an aiohttp application.

    ``telemetry``: its instruments are served as Prometheus text on ``GET /metrics``.

    ``token``: bearer token of the write route (rollback); None or empty disables it (403).
    ``ready``: readiness check; it returns details for ``/readyz`` or raises (503 + reason).
    ``before_write``: awaited before a rollback is stored (e.g. connect the Kafka producer), so
    a publisher that cannot work refuses the rollback (503) before anything is written.
    """
    document = openapi_document()
    h = _Handlers(store, publisher, token=token or None, ready=ready,
                  ready_timeout_s=ready_timeout_s, before_write=before_write, clock=clock,
                  document=document)
    app = web.Application(middlewares=[_error_middleware])
    app.router.add_get(SUMMARY_PATH, h.summary, name="summary")
    app.router.add_get(HISTORY_PATH, h.history, name="history")
    app.router.add_post(ROLLBACK_PATH, h.rollback, name="rollback")
    app.router.add_get("/livez", h.livez, name="livez")
    app.router.add_get("/readyz", h.readyz, name="readyz")
    app.router.add_get("/openapi.json", h.openapi, name="openapi")
    metrics_source = telemetry or Telemetry.noop()

    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(body=metrics_source.metrics_text(),
                            headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})

    app.router.add_get("/metrics", metrics_page, name="metrics")
    return app


# --- OpenAPI ---------------------------------------------------------------------------------


def _response(description: str, ref: dict[str, str]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of :func:`create_api`'s routes.

    Schemas come from the pydantic models (``model_json_schema`` machinery) and live under
    ``components/schemas``.
    """
    refs, defs = models_json_schema(
        [
            (SummaryRecord, "serialization"),
            (HistoryPage, "serialization"),
            (RollbackRequest, "validation"),
            (ErrorBody, "serialization"),
            (Liveness, "serialization"),
            (Readiness, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    record = refs[(SummaryRecord, "serialization")]
    page = refs[(HistoryPage, "serialization")]
    rollback = refs[(RollbackRequest, "validation")]
    error = refs[(ErrorBody, "serialization")]
    liveness = refs[(Liveness, "serialization")]
    readiness = refs[(Readiness, "serialization")]

    user_param = {
        "name": "user_id", "in": "path", "required": True,
        "schema": _USER_ID.json_schema(), "description": "The user's id.",
    }

    def errors(*codes: int) -> dict[str, Any]:
        text = {
            400: "Invalid parameter or body.",
            401: "Missing or wrong bearer token.",
            403: "Writes are disabled: no API token configured.",
            404: "Not found.",
            409: "Version conflict: another writer stored the version first, `expected_version` "
                 "is not current, or `to_version` is already current.",
            502: "The version was stored but its change event could not be published.",
            503: "The profile store (or, for rollbacks, the change publisher) is unavailable.",
        }
        return {str(c): _response(text[c], error) for c in codes}

    paths: dict[str, Any] = {
        SUMMARY_PATH: {
            "get": {
                "operationId": "getSummary",
                "summary": "Current summary, or the one current at `as_of`",
                "description": "Without `as_of`: the user's latest version. With `as_of`: the "
                               "highest version whose `created_at <= as_of`.",
                "tags": ["summaries"],
                "parameters": [
                    user_param,
                    {"name": "as_of", "in": "query", "required": False,
                     "description": "ISO 8601 timestamp WITH a timezone offset.",
                     "schema": {"type": "string", "format": "date-time"}},
                ],
                "responses": {"200": _response("The version.", record), **errors(400, 404, 503)},
            }
        },
        HISTORY_PATH: {
            "get": {
                "operationId": "getHistory",
                "summary": "Versions newest first, paginated by version",
                "tags": ["summaries"],
                "parameters": [
                    user_param,
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_HISTORY_LIMIT,
                                "default": DEFAULT_HISTORY_LIMIT}},
                    {"name": "before_version", "in": "query", "required": False,
                     "description": "Only versions lower than this (the previous page's "
                                    "`next_before_version`).",
                     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}},
                ],
                "responses": {
                    "200": _response("A page of versions (empty for an unknown user).", page),
                    **errors(400, 503),
                },
            }
        },
        ROLLBACK_PATH: {
            "post": {
                "operationId": "rollback",
                "summary": "Restore an older version's summary as a new version",
                "description": f"Stores version current+1 with `to_version`'s summary (model "
                               f"`{ROLLBACK_MODEL}`, no event ids) and publishes its "
                               "`SummaryChanged` event.",
                "tags": ["summaries"],
                "security": [{"bearerAuth": []}],
                "parameters": [user_param],
                "requestBody": {"required": True,
                                "content": {"application/json": {"schema": rollback}}},
                "responses": {
                    "201": _response("The new version.", record),
                    **errors(400, 401, 403, 404, 409, 502, 503),
                },
            }
        },
        "/livez": {
            "get": {
                "operationId": "livez", "summary": "Liveness", "tags": ["health"],
                "responses": {"200": _response("The process serves requests.", liveness)},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz", "summary": "Readiness: the store answers a trivial query",
                "tags": ["health"],
                "responses": {"200": _response("Ready.", readiness),
                              "503": _response("Not ready, with the reason.", readiness)},
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi", "summary": "This document", "tags": ["meta"],
                "responses": {"200": {"description": "OpenAPI 3.1 document.",
                                      "content": {"application/json": {
                                          "schema": {"type": "object"}}}}},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics", "summary": "Prometheus metrics (OpenTelemetry instruments)",
                "tags": ["meta"],
                "responses": {"200": {"description": "Prometheus text exposition format 0.0.4.",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "prefstream read API",
            "version": __version__,
            "description": "Versioned natural-language preference summaries per user.",
        },
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
