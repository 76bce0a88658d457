"""The read API (streamer/api.py) over the in-memory and SQLite stores, through a real HTTP
test server."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from schemas import SummaryRecord, TokenUsage
from streamer.adapters.memory.publish import CollectingPublisher
from streamer.adapters.memory.store import InMemoryProfileStore
from streamer.adapters.sqlite.store import SqliteProfileStore
from streamer.domain.windowing import window_id
from streamer.entrypoints.api import ROLLBACK_MODEL, create_api, openapi_document, store_probe
from streamer.errors import StoreUnavailableError, VersionConflictError
from streamer.services.updater import change_event
from streamer.settings import ApiSettings, Settings

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
READ_TOKEN = "reader-token"


def record(user: str, version: int, summary: str | None = None) -> SummaryRecord:
    return SummaryRecord(
        user_id=user, version=version, previous_version=version - 1 if version > 1 else None,
        summary=summary or f"summary {version} of {user}", model="m", window_id=f"w{version}",
        event_ids=(f"e{version}",), usage=TokenUsage(prompt_tokens=10, completion_tokens=3),
        latency_ms=5.0, created_at=T0 + timedelta(hours=version),
    )


async def seed(store, user: str = "u1", versions: int = 3) -> list[SummaryRecord]:
    records = [record(user, v) for v in range(1, versions + 1)]
    for r in records:
        await store.append(r)
    return records


async def _ready() -> dict:
    return {"store": "fake"}


@asynccontextmanager
async def serve(store=None, publisher=None, *, token: str | None = TOKEN, ready=_ready,
                clock=lambda: NOW, reader: str | None = READ_TOKEN, **kw):
    """The API with a read token and an admin token; the client presents ``reader`` (the read
    token) on every request unless a request sets its own Authorization."""
    store = store if store is not None else InMemoryProfileStore()
    publisher = publisher if publisher is not None else CollectingPublisher()
    kw.setdefault("read_tokens", (READ_TOKEN, "another-reader"))
    app = create_api(store, publisher, token=token, ready=ready, clock=clock, **kw)
    headers = {"Authorization": f"Bearer {reader}"} if reader else None
    async with TestClient(TestServer(app), headers=headers) as client:
        client.store, client.publisher = store, publisher  # type: ignore[attr-defined]
        yield client


async def error_of(resp, status: int) -> str:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error", "message"} and body["message"]
    return body["error"]


# --- reads -----------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def store(request):
    s = InMemoryProfileStore() if request.param == "memory" else SqliteProfileStore(":memory:")
    yield s


async def test_current_summary(store):
    records = await seed(store)
    async with serve(store) as client:
        resp = await client.get("/v1/users/u1/summary")
        assert resp.status == 200
        assert await resp.json() == records[-1].model_dump(mode="json")


async def test_unknown_user_is_404_and_blank_user_is_400(store):
    async with serve(store) as client:
        assert await error_of(await client.get("/v1/users/nobody/summary"), 404) == "not_found"
        assert await error_of(await client.get("/v1/users/%20/summary"), 400) == "invalid_user_id"
        long = "x" * 257
        assert await error_of(await client.get(f"/v1/users/{long}/history"), 400) == \
            "invalid_user_id"


async def test_non_ascii_user_id_round_trips():
    store = InMemoryProfileStore()
    await store.append(record("usér ü", 1))
    async with serve(store) as client:
        resp = await client.get(f"/v1/users/{quote('usér ü')}/summary")
        assert resp.status == 200 and (await resp.json())["user_id"] == "usér ü"


async def test_history_pages_newest_first(store):
    await seed(store, versions=5)
    async with serve(store) as client:
        resp = await client.get("/v1/users/u1/history", params={"limit": "2"})
        assert resp.status == 200
        page = await resp.json()
        assert page["user_id"] == "u1"
        assert [r["version"] for r in page["items"]] == [5, 4]
        assert page["next_before_version"] == 4
        page = await (await client.get("/v1/users/u1/history",
                                       params={"limit": "2", "before_version": "4"})).json()
        assert [r["version"] for r in page["items"]] == [3, 2] and page["next_before_version"] == 2
        page = await (await client.get("/v1/users/u1/history",
                                       params={"limit": "2", "before_version": "2"})).json()
        assert [r["version"] for r in page["items"]] == [1]
        assert page["next_before_version"] is None
        # a page that ends exactly on version 1 says there is nothing more
        page = await (await client.get("/v1/users/u1/history", params={"limit": "5"})).json()
        assert [r["version"] for r in page["items"]] == [5, 4, 3, 2, 1]
        assert page["next_before_version"] is None
        # default limit, full records
        page = await (await client.get("/v1/users/u1/history")).json()
        assert page["items"][0] == record("u1", 5).model_dump(mode="json")
        assert len(page["items"]) == 5


async def test_history_of_unknown_user_is_an_empty_page(store):
    async with serve(store) as client:
        resp = await client.get("/v1/users/nobody/history")
        assert resp.status == 200
        assert await resp.json() == {"user_id": "nobody", "items": [], "next_before_version": None}


@pytest.mark.parametrize("query", [
    {"limit": "0"}, {"limit": "101"}, {"limit": "abc"}, {"limit": "-1"}, {"limit": "1.5"},
    {"limit": "1_0"}, {"before_version": "0"}, {"before_version": "x"},
    {"before_version": "99999999999"},
])
async def test_history_rejects_bad_parameters(query):
    async with serve() as client:
        code = await error_of(await client.get("/v1/users/u1/history", params=query), 400)
        assert code == f"invalid_{next(iter(query))}"


async def test_as_of_returns_the_version_current_then(store):
    await seed(store)  # versions created at T0+1h, T0+2h, T0+3h
    async with serve(store) as client:
        async def version_at(value: str) -> int:
            resp = await client.get("/v1/users/u1/summary", params={"as_of": value})
            assert resp.status == 200, await resp.text()
            return (await resp.json())["version"]

        assert await version_at((T0 + timedelta(hours=2, minutes=30)).isoformat()) == 2
        assert await version_at((T0 + timedelta(hours=2)).isoformat()) == 2  # inclusive
        assert await version_at("2026-03-01T15:00:00Z") == 3
        assert await version_at("2099-01-01T00:00:00Z") == 3
        assert await version_at("2026-03-01T17:30:00+02:00") == 3  # 15:30Z
        assert await version_at("2026-03-01T16:30:00+02:00") == 2  # 14:30Z
        assert await version_at("2026-03-01T08:30:00-05:00") == 1  # 13:30Z
        # an unencoded "+" arrives as a space; it is restored
        resp = await client.get("/v1/users/u1/summary?as_of=2026-03-01T13:30:00+00:00")
        assert resp.status == 200 and (await resp.json())["version"] == 1
        before_first = await client.get("/v1/users/u1/summary",
                                        params={"as_of": "2026-03-01T12:59:59Z"})
        assert await error_of(before_first, 404) == "not_found"
        unknown = await client.get("/v1/users/nobody/summary", params={"as_of": "2099-01-01T00:00:00Z"})
        assert await error_of(unknown, 404) == "not_found"


@pytest.mark.parametrize("value", [
    "2026-03-01T12:00:00", "2026-03-01", "yesterday", "", "2026-13-01T00:00:00Z", "1700000000",
])
async def test_as_of_needs_an_aware_iso_timestamp(value):
    async with serve() as client:
        resp = await client.get("/v1/users/u1/summary", params={"as_of": value})
        assert await error_of(resp, 400) == "invalid_as_of"


async def test_store_outage_is_503():
    class Down(InMemoryProfileStore):
        async def get_current(self, user_id):
            raise StoreUnavailableError("Cassandra unavailable: boom")

    async with serve(Down()) as client:
        resp = await client.get("/v1/users/u1/summary")
        assert await error_of(resp, 503) == "store_unavailable"
        assert "boom" not in (await resp.json())["message"]


async def test_unknown_route_and_wrong_method_answer_json():
    async with serve() as client:
        assert await error_of(await client.get("/v1/nothing"), 404) == "not_found"
        resp = await client.delete("/v1/users/u1/summary")
        assert await error_of(resp, 405) == "method_not_allowed"
        assert "GET" in resp.headers["Allow"]


async def test_unexpected_error_is_500_without_details():
    class Broken(InMemoryProfileStore):
        async def history_page(self, user_id, limit, before_version=None):
            raise RuntimeError("secret internals")

    async with serve(Broken()) as client:
        resp = await client.get("/v1/users/u1/history")
        assert await error_of(resp, 500) == "internal_error"
        assert "secret" not in await resp.text()


# --- rollback --------------------------------------------------------------------------------


async def test_rollback_writes_a_new_version_and_publishes_it():
    store, publisher = InMemoryProfileStore(), CollectingPublisher()
    records = await seed(store)
    async with serve(store, publisher) as client:
        resp = await client.post("/v1/users/u1/rollback", headers=AUTH,
                                 json={"to_version": 1, "reason": "bad update"})
        assert resp.status == 201, await resp.text()
        body = await resp.json()
    new = SummaryRecord.model_validate(body)
    assert new.version == 4 and new.previous_version == 3
    assert new.summary == records[0].summary
    assert new.model == ROLLBACK_MODEL and new.event_ids == () and new.dropped_event_ids == ()
    assert new.window_id == window_id("u1", ("rollback", "1", "4"))
    assert new.created_at == NOW and new.usage == TokenUsage(prompt_tokens=0, completion_tokens=0)
    assert (await store.get_current("u1")) == new
    assert [r.version for r in await store.history("u1")] == [1, 2, 3, 4]
    assert publisher.events == [change_event(new, records[2].summary)]  # it replaced v3


async def test_rollback_created_at_is_truncated_to_milliseconds():
    store, publisher = InMemoryProfileStore(), CollectingPublisher()
    await seed(store)
    precise = NOW.replace(microsecond=123456)
    async with serve(store, publisher, clock=lambda: precise) as client:
        resp = await client.post("/v1/users/u1/rollback", headers=AUTH,
                                 json={"to_version": 1, "reason": "r"})
        assert (await resp.json())["created_at"] == "2026-03-02T09:30:00.123000Z"
    assert publisher.events[0].occurred_at == NOW.replace(microsecond=123000)


async def test_rollback_with_matching_expected_version():
    store = InMemoryProfileStore()
    await seed(store)
    async with serve(store) as client:
        resp = await client.post("/v1/users/u1/rollback", headers=AUTH,
                                 json={"to_version": 2, "reason": "r", "expected_version": 3})
        assert resp.status == 201
        assert (await resp.json())["summary"] == "summary 2 of u1"


async def test_rollback_is_disabled_without_a_configured_token():
    for token in (None, ""):
        store, publisher = InMemoryProfileStore(), CollectingPublisher()
        await seed(store)
        async with serve(store, publisher, token=token) as client:
            for headers in ({}, AUTH, {"Authorization": "Bearer "}):
                resp = await client.post("/v1/users/u1/rollback", headers=headers,
                                         json={"to_version": 1, "reason": "r"})
                assert await error_of(resp, 403) == "writes_disabled"
            # reads stay open
            assert (await client.get("/v1/users/u1/summary")).status == 200
        assert len(store.versions["u1"]) == 3 and publisher.events == []


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer ünïcode"},
])
async def test_rollback_needs_the_right_bearer_token(headers):
    store, publisher = InMemoryProfileStore(), CollectingPublisher()
    await seed(store)
    async with serve(store, publisher) as client:
        resp = await client.post("/v1/users/u1/rollback", headers=headers,
                                 json={"to_version": 1, "reason": "r"})
        assert await error_of(resp, 401) == "unauthorized"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert len(store.versions["u1"]) == 3 and publisher.events == []


async def test_bearer_scheme_is_case_insensitive():
    store = InMemoryProfileStore()
    await seed(store)
    async with serve(store) as client:
        resp = await client.post("/v1/users/u1/rollback", headers={"Authorization": f"bearer {TOKEN}"},
                                 json={"to_version": 1, "reason": "r"})
        assert resp.status == 201


async def test_auth_is_checked_before_the_body():
    async with serve() as client:
        resp = await client.post("/v1/users/u1/rollback", data=b"not json")
        assert await error_of(resp, 401) == "unauthorized"


@pytest.mark.parametrize("body", [
    b"not json",
    b"",
    b"[1, 2]",
    json.dumps({"to_version": 1}).encode(),
    json.dumps({"to_version": 1, "reason": ""}).encode(),
    json.dumps({"to_version": 0, "reason": "r"}).encode(),
    json.dumps({"to_version": "1", "reason": "r"}).encode(),
    json.dumps({"to_version": 1.5, "reason": "r"}).encode(),
    json.dumps({"to_version": 1, "reason": "r", "extra": True}).encode(),
    json.dumps({"to_version": 2**31, "reason": "r"}).encode(),
])
async def test_rollback_rejects_invalid_bodies(body):
    store, publisher = InMemoryProfileStore(), CollectingPublisher()
    await seed(store)
    async with serve(store, publisher) as client:
        resp = await client.post("/v1/users/u1/rollback", headers={**AUTH, "Content-Type":
                                                                   "application/json"}, data=body)
        assert await error_of(resp, 400) == "invalid_request"
    assert len(store.versions["u1"]) == 3 and publisher.events == []


@pytest.mark.parametrize(("user", "body", "status", "code"), [
    ("nobody", {"to_version": 1, "reason": "r"}, 404, "not_found"),
    ("u1", {"to_version": 7, "reason": "r"}, 404, "version_not_found"),
    ("u1", {"to_version": 3, "reason": "r"}, 409, "already_current"),
    ("u1", {"to_version": 1, "reason": "r", "expected_version": 2}, 409, "version_conflict"),
])
async def test_rollback_refusals(user, body, status, code):
    store, publisher = InMemoryProfileStore(), CollectingPublisher()
    await seed(store)
    async with serve(store, publisher) as client:
        resp = await client.post(f"/v1/users/{user}/rollback", headers=AUTH, json=body)
        assert await error_of(resp, status) == code
    assert len(store.versions["u1"]) == 3 and publisher.events == []


async def test_concurrent_rollbacks_exactly_one_wins():
    store, publisher = InMemoryProfileStore(), CollectingPublisher()
    await seed(store)
    async with serve(store, publisher) as client:
        responses = await asyncio.gather(*(
            client.post("/v1/users/u1/rollback", headers=AUTH,
                        json={"to_version": v, "reason": "race", "expected_version": 3})
            for v in (1, 2)
        ))
        statuses = sorted(r.status for r in responses)
        assert statuses == [201, 409]
    assert [r.version for r in await store.history("u1")] == [1, 2, 3, 4]
    assert len(publisher.events) == 1 and publisher.events[0].version == 4


async def test_losing_the_store_race_is_409_and_publishes_nothing():
    class Racy(InMemoryProfileStore):
        async def append(self, record):
            raise VersionConflictError("version 4 already exists")

    store, publisher = Racy(), CollectingPublisher()
    for r in [record("u1", v) for v in (1, 2)]:
        store.versions["u1"].append(r)
    async with serve(store, publisher) as client:
        resp = await client.post("/v1/users/u1/rollback", headers=AUTH,
                                 json={"to_version": 1, "reason": "r"})
        assert await error_of(resp, 409) == "version_conflict"
    assert publisher.events == []


async def test_publisher_not_ready_refuses_before_writing():
    async def not_ready():
        raise ConnectionError("kafka down")

    store, publisher = InMemoryProfileStore(), CollectingPublisher()
    await seed(store)
    async with serve(store, publisher, before_write=not_ready) as client:
        resp = await client.post("/v1/users/u1/rollback", headers=AUTH,
                                 json={"to_version": 1, "reason": "r"})
        assert await error_of(resp, 503) == "publisher_unavailable"
    assert len(store.versions["u1"]) == 3 and publisher.events == []


async def test_publish_failure_after_the_write_is_reported():
    class Failing(CollectingPublisher):
        async def publish(self, event):
            raise TimeoutError("no ack")

    store = InMemoryProfileStore()
    await seed(store)
    async with serve(store, Failing()) as client:
        resp = await client.post("/v1/users/u1/rollback", headers=AUTH,
                                 json={"to_version": 1, "reason": "r"})
        assert await error_of(resp, 502) == "publish_failed"
        assert "version 4 was stored" in (await resp.json())["message"]
    assert (await store.get_current("u1")).version == 4


# --- health ----------------------------------------------------------------------------------


async def test_livez_and_readyz():
    async with serve() as client:
        resp = await client.get("/livez")
        assert resp.status == 200 and await resp.json() == {"status": "ok"}
        resp = await client.get("/readyz")
        assert resp.status == 200
        assert await resp.json() == {"status": "ready", "reason": None, "checks": {"store": "fake"}}


async def test_readyz_is_503_with_the_reason():
    async def failing() -> dict:
        raise StoreUnavailableError("Cassandra unavailable: no host")

    async with serve(ready=failing) as client:
        resp = await client.get("/readyz")
        assert resp.status == 503
        body = await resp.json()
        assert body["status"] == "unavailable" and "no host" in body["reason"]
        assert (await client.get("/livez")).status == 200


async def test_readyz_times_out():
    async def hangs() -> dict:
        await asyncio.sleep(60)
        return {}

    async with serve(ready=hangs, ready_timeout_s=0.05) as client:
        resp = await client.get("/readyz")
        assert resp.status == 503 and "timed out" in (await resp.json())["reason"]


async def test_store_probe_queries_the_store():
    seen = []

    class Spy(InMemoryProfileStore):
        async def get_current(self, user_id):
            seen.append(user_id)
            return None

    result = await store_probe(Spy())()
    assert result["store"] == "Spy" and result["latency_ms"] >= 0 and len(seen) == 1


# --- OpenAPI ---------------------------------------------------------------------------------


def _resolve(doc: dict, ref: str) -> dict:
    assert ref.startswith("#/"), ref
    node = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _validator(doc: dict, component: str) -> Draft202012Validator:
    registry = Registry().with_resource(
        "urn:prefstream:openapi", Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    return Draft202012Validator(
        {"$ref": f"urn:prefstream:openapi#/components/schemas/{component}"}, registry=registry
    )


async def test_openapi_document_describes_every_route():
    async with serve() as client:
        resp = await client.get("/openapi.json")
        assert resp.status == 200 and resp.content_type == "application/json"
        doc = json.loads(await resp.text())
        app = client.server.app
    assert doc == json.loads(json.dumps(openapi_document()))
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] and doc["info"]["version"]

    served = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.method not in ("HEAD", "*")
    }
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert served == documented

    operation_ids = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            operation_ids.append(op["operationId"])
            assert op["responses"], (path, method)
            for status, response in op["responses"].items():
                assert status.isdigit() and response["description"]
                for media in response.get("content", {}).values():
                    assert "schema" in media
            path_params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert path_params == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}
            for param in op.get("parameters", []):
                assert param["in"] in ("path", "query") and "schema" in param
                if param["in"] == "path":
                    assert param["required"] is True
    assert len(operation_ids) == len(set(operation_ids))

    rollback = doc["paths"]["/v1/users/{user_id}/rollback"]["post"]
    assert rollback["security"] == [{"bearerAuth": []}]
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {"type": "http",
                                                                  "scheme": "bearer"}
    assert {"201", "400", "401", "403", "404", "409"} <= set(rollback["responses"])
    body_schema = _resolve(doc, rollback["requestBody"]["content"]["application/json"]["schema"]
                           ["$ref"])
    assert body_schema["required"] == ["to_version", "reason"]

    for ref in _refs(doc):
        _resolve(doc, ref)  # every reference resolves inside the document
    for name, schema in doc["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
        assert "$defs" not in schema, name
    assert {"SummaryRecord", "TokenUsage", "HistoryPage", "RollbackRequest", "ErrorBody",
            "Readiness", "Liveness"} <= set(doc["components"]["schemas"])


async def test_answers_match_their_documented_schemas():
    store = InMemoryProfileStore()
    await seed(store)
    doc = openapi_document()
    async with serve(store) as client:
        current = await (await client.get("/v1/users/u1/summary")).json()
        page = await (await client.get("/v1/users/u1/history", params={"limit": "2"})).json()
        missing = await (await client.get("/v1/users/x/summary")).json()
        ready = await (await client.get("/readyz")).json()
        rolled = await (await client.post("/v1/users/u1/rollback", headers=AUTH,
                                          json={"to_version": 1, "reason": "r"})).json()
    _validator(doc, "SummaryRecord").validate(current)
    _validator(doc, "SummaryRecord").validate(rolled)
    _validator(doc, "HistoryPage").validate(page)
    _validator(doc, "ErrorBody").validate(missing)
    _validator(doc, "Readiness").validate(ready)
    _validator(doc, "RollbackRequest").validate({"to_version": 1, "reason": "r"})
    with pytest.raises(Exception, match="reason"):
        _validator(doc, "RollbackRequest").validate({"to_version": 1})


# --- settings and CLI ------------------------------------------------------------------------


def test_api_settings_defaults_and_env(monkeypatch):
    assert ApiSettings() == ApiSettings(host="0.0.0.0", port=8080, token=None)
    monkeypatch.setenv("STREAMER_API__TOKEN", "t0ken")
    monkeypatch.setenv("STREAMER_API__PORT", "9001")
    s = Settings()
    assert s.api.port == 9001 and s.api.token.get_secret_value() == "t0ken"
    assert "t0ken" not in repr(s)


# --- store methods used by the API (the Cassandra ones are in tests/integration) -----------


async def test_history_page_and_as_of_of_the_stores(store):
    await seed(store, versions=4)
    assert [r.version for r in await store.history_page("u1", 2)] == [4, 3]
    assert [r.version for r in await store.history_page("u1", 10, 3)] == [2, 1]
    assert await store.history_page("u1", 10, 1) == []
    assert await store.history_page("nobody", 10) == []
    assert [r.version for r in await store.history("u1")] == [1, 2, 3, 4]  # unchanged
    assert (await store.as_of("u1", T0 + timedelta(hours=3, seconds=1))).version == 3
    assert await store.as_of("u1", T0) is None


# --- access control ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/users/u1/summary", "/v1/users/u1/history",
                                  "/v1/users/u1/summary?as_of=2026-03-01T13:30:00Z"])
async def test_reads_need_a_read_or_admin_token(store, path):
    await seed(store)
    async with serve(store, reader=None) as client:
        assert await error_of(await client.get(path), 401) == "unauthorized"
        wrong = await client.get(path, headers={"Authorization": "Bearer nope"})
        assert await error_of(wrong, 401) == "unauthorized"
        assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
        for token in (READ_TOKEN, "another-reader", TOKEN):  # each read token, and the admin's
            ok = await client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert ok.status == 200, await ok.text()


async def test_a_read_token_cannot_write(store):
    await seed(store)
    async with serve(store) as client:  # the client presents the read token
        resp = await client.post("/v1/users/u1/rollback", json={"to_version": 1, "reason": "x"})
        assert await error_of(resp, 401) == "unauthorized"
        assert [r.version for r in await store.history("u1")] == [1, 2, 3]


async def test_reads_are_refused_when_no_token_is_configured(store):
    await seed(store)
    async with serve(store, token=None, reader=None, read_tokens=()) as client:
        assert await error_of(await client.get("/v1/users/u1/summary"), 403) == "reads_disabled"
    async with serve(store, token=None, reader=None, read_tokens=(),
                     anonymous_reads=True) as client:  # the local demo's explicit opt-in
        assert (await client.get("/v1/users/u1/summary")).status == 200


async def test_as_of_reads_are_bounded(store):
    await seed(store, versions=5)  # created at 13:00 ... 17:00
    async with serve(store, as_of_max_versions=3) as client:
        ok = await client.get("/v1/users/u1/summary", params={"as_of": "2026-03-01T15:30:00+00:00"})
        assert ok.status == 200 and (await ok.json())["version"] == 3  # the 3rd newest: examined
        deep = await client.get("/v1/users/u1/summary",
                                params={"as_of": "2026-03-01T14:30:00+00:00"})
        assert await error_of(deep, 422) == "as_of_too_old"
