"""The OpenAPI 3.1 document of the read API, built from the pydantic bodies."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import models_json_schema

from schemas import SummaryRecord
from schemas.events import UserId

from ... import __version__
from ...services.rollback import ROLLBACK_MODEL
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

_USER_ID: TypeAdapter[str] = TypeAdapter(UserId)


def _response(description: str, ref: dict[str, str]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of :func:`~streamer.entrypoints.api.create_api`'s routes.

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
            401: "Missing or wrong bearer token (reads: a read token or the admin token; "
                 "writes: the admin token).",
            403: "Disabled: no token of the route's scope is configured.",
            422: "`as_of` is older than the newest `STREAMER_API__AS_OF_MAX_VERSIONS` versions: "
                 "page the history instead.",
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
                "security": [{"bearerAuth": []}],
                "responses": {"200": _response("The version.", record),
                              **errors(400, 401, 403, 404, 422, 503)},
            }
        },
        HISTORY_PATH: {
            "get": {
                "operationId": "getHistory",
                "summary": "Versions newest first, paginated by version",
                "tags": ["summaries"],
                "security": [{"bearerAuth": []}],
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
                    **errors(400, 401, 403, 503),
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
        USER_PATH: {
            "delete": {
                "operationId": "forgetUser",
                "summary": "Delete a user everywhere (the right to be forgotten)",
                "description": "Removes every stored version, the current row, the applied-event "
                               "index, pending and parked windows; publishes "
                               "`SummaryDeleted` and a tombstone on the summaries topic. Events "
                               "of the user still in flight are dropped for "
                               "`STREAMER_FORGET__SUPPRESS_S`. Idempotent.",
                "tags": ["summaries"],
                "security": [{"bearerAuth": []}],
                "parameters": [user_param],
                "responses": {
                    "200": {"description": "What was deleted.", "content": {"application/json": {
                        "schema": {"type": "object", "required": [
                            "user_id", "deleted_versions", "deleted_pending_events",
                            "suppressed_s", "event_id"], "properties": {
                            "user_id": {"type": "string"},
                            "deleted_versions": {"type": "integer", "minimum": 0},
                            "deleted_pending_events": {"type": "integer", "minimum": 0},
                            "suppressed_s": {"type": "number", "minimum": 0},
                            "event_id": {"type": "string"}}}}}},
                    **errors(400, 401, 403, 503),
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
