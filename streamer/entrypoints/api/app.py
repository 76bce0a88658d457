"""The read API's aiohttp application: handlers, error middleware, readiness probe."""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.events import UserId

from ...errors import AsOfTooDeepError, RollbackRefusedError, StoreUnavailableError
from ...ports import ChangePublisher, PendingBuffer, ProfileStore, ReadableProfileStore
from ...services.forget import forget_user
from ...services.rollback import rollback
from ...telemetry import PROMETHEUS_CONTENT_TYPE, Telemetry
from .bodies import (
    DEFAULT_HISTORY_LIMIT,
    HISTORY_PATH,
    MAX_HISTORY_LIMIT,
    MAX_VERSION,
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

log = logging.getLogger(__name__)

Ready = Callable[[], Awaitable[dict]]

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
    422: "unprocessable",
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


_ROLLBACK_STATUS = {"not_found": 404, "version_not_found": 404, "version_conflict": 409,
                    "already_current": 409, "publisher_unavailable": 503, "publish_failed": 502}


def store_probe(store: ProfileStore, *, user_id: str = "__readyz__") -> Ready:
    """A readiness check: one trivial read (a single-partition lookup) on the store."""

    async def probe() -> dict:
        started = time.perf_counter()
        await store.get_current(user_id)
        return {"store": type(store).__name__,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2)}

    return probe




class _Handlers:
    def __init__(
        self,
        store: ReadableProfileStore,
        publisher: ChangePublisher,
        *,
        token: str | None,
        read_tokens: Sequence[str],
        anonymous_reads: bool,
        as_of_max_versions: int | None,
        buffer: PendingBuffer | None,
        forget_suppress_s: float,
        ready: Ready,
        ready_timeout_s: float,
        before_write: Callable[[], Awaitable[None]] | None,
        clock: Callable[[], datetime],
        document: dict[str, Any],
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.token = token.encode() if token else None
        self.read_tokens = tuple(t.encode() for t in read_tokens if t)
        self.anonymous_reads = anonymous_reads
        self.as_of_max_versions = as_of_max_versions
        self.buffer = buffer
        self.forget_suppress_s = forget_suppress_s
        self.ready = ready
        self.ready_timeout_s = ready_timeout_s
        self.before_write = before_write
        self.clock = clock
        self.document = json.dumps(document, ensure_ascii=False)

    async def summary(self, request: web.Request) -> web.Response:
        self._authorize_read(request)
        user_id = _user_id(request)
        raw = request.query.get("as_of")
        if raw is not None:
            when = parse_as_of(raw)
            try:
                record = await self.store.as_of(user_id, when,
                                                max_versions=self.as_of_max_versions)
            except AsOfTooDeepError as exc:
                raise ApiError(422, "as_of_too_old",
                               f"{exc}: page the history (GET {HISTORY_PATH}) to go further "
                               "back") from exc
            if record is None:
                raise ApiError(404, "not_found",
                               f"user {user_id!r} had no summary at {when.isoformat()}")
        else:
            record = await self.store.get_current(user_id)
            if record is None:
                raise ApiError(404, "not_found", f"no summary for user {user_id!r}")
        return _json(record)

    async def history(self, request: web.Request) -> web.Response:
        self._authorize_read(request)
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
        """The admin scope (the write routes): the admin token only."""
        if self.token is None:
            raise ApiError(403, "writes_disabled",
                           "rollback is disabled: no API token is configured (STREAMER_API__TOKEN)")
        self._check(request, (self.token,))

    def _authorize_read(self, request: web.Request) -> None:
        """The read scope: a read token or the admin token (or anyone, with anonymous reads)."""
        if self.anonymous_reads:
            return
        accepted = (*self.read_tokens, *((self.token,) if self.token else ()))
        if not accepted:
            raise ApiError(403, "reads_disabled",
                           "reads need a token and none is configured: set "
                           "STREAMER_API__READ_TOKENS (or STREAMER_API__ANONYMOUS_READS=true "
                           "for a local demo)")
        self._check(request, accepted)

    @staticmethod
    def _check(request: web.Request, accepted: Sequence[bytes]) -> None:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        presented = credentials.strip().encode()
        if scheme.lower() != "bearer" or not presented:
            raise ApiError(401, "unauthorized", "missing bearer token",
                           {"WWW-Authenticate": 'Bearer realm="prefstream"'})
        # compare with every accepted token (no early exit: the time does not tell which)
        matches = [hmac.compare_digest(presented, t) for t in accepted]
        if not any(matches):
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
        try:
            record = await rollback(
                self.store, self.publisher, user_id, body.to_version, reason=body.reason,
                expected_version=body.expected_version, now=self.clock(),
                before_write=self.before_write)
        except RollbackRefusedError as exc:
            raise ApiError(_ROLLBACK_STATUS[exc.code], exc.code, str(exc)) from exc
        return _json(record, status=201)

    async def forget(self, request: web.Request) -> web.Response:
        """Delete the user everywhere (admin scope): versions, current row, applied-event index,
        pending and parked windows; then the deletion event and a tombstone."""
        self._authorize(request)
        user_id = _user_id(request)
        if self.buffer is None:
            raise ApiError(503, "unavailable", "no pending buffer is configured for deletes")
        if self.before_write is not None:
            await self.before_write()
        report = await forget_user(self.store, self.buffer, self.publisher, user_id,
                                   suppress_s=self.forget_suppress_s, now=self.clock())
        return web.json_response(report.as_dict(), dumps=_dumps)

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
    read_tokens: Sequence[str] = (),
    anonymous_reads: bool = False,
    as_of_max_versions: int | None = 10_000,
    buffer: PendingBuffer | None = None,
    forget_suppress_s: float = 0.0,
    ready_timeout_s: float = 5.0,
    before_write: Callable[[], Awaitable[None]] | None = None,
    clock: Callable[[], datetime] = _utcnow,
    telemetry: Telemetry | None = None,
) -> web.Application:
    """The read API as an aiohttp application.

    ``telemetry``: its instruments are served as Prometheus text on ``GET /metrics``.

    ``token``: the admin bearer token (rollback, and reads); None or empty disables writes (403).
    ``read_tokens``: bearer tokens of the read scope; without them, an admin token or
    ``anonymous_reads``, reads answer 403.  ``as_of_max_versions`` bounds an ``as_of`` read.
    ``ready``: readiness check; it returns details for ``/readyz`` or raises (503 + reason).
    ``before_write``: awaited before a rollback is stored (e.g. connect the Kafka producer), so
    a publisher that cannot work refuses the rollback (503) before anything is written.
    """
    document = openapi_document()
    h = _Handlers(store, publisher, token=token or None, read_tokens=read_tokens,
                  anonymous_reads=anonymous_reads, as_of_max_versions=as_of_max_versions,
                  buffer=buffer, forget_suppress_s=forget_suppress_s,
                  ready=ready,
                  ready_timeout_s=ready_timeout_s, before_write=before_write, clock=clock,
                  document=document)
    app = web.Application(middlewares=[_error_middleware])
    app.router.add_get(SUMMARY_PATH, h.summary, name="summary")
    app.router.add_get(HISTORY_PATH, h.history, name="history")
    app.router.add_post(ROLLBACK_PATH, h.rollback, name="rollback")
    app.router.add_delete(USER_PATH, h.forget, name="forget")
    app.router.add_get("/livez", h.livez, name="livez")
    app.router.add_get("/readyz", h.readyz, name="readyz")
    app.router.add_get("/openapi.json", h.openapi, name="openapi")
    metrics_source = telemetry or Telemetry.noop()

    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(body=metrics_source.metrics_text(),
                            headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})

    app.router.add_get("/metrics", metrics_page, name="metrics")
    return app


