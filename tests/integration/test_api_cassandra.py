"""The read API (streamer/api.py) over CassandraProfileStore against a real Cassandra.

Change events go through the real KafkaChangePublisher into a recording ``send`` (the broker
side of that publisher is covered by test_kafka_adapters.py).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer

from schemas import SummaryChanged, SummaryRecord, TokenUsage
from streamer.adapters.cassandra import store as cassandra_store
from streamer.adapters.cassandra.store import CassandraProfileStore
from streamer.adapters.kafka.publish import KafkaChangePublisher
from streamer.domain.windowing import window_id
from streamer.entrypoints.api import ROLLBACK_MODEL, create_api, store_probe
from streamer.services.updater import change_event

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TOKEN = "integration-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
READ_TOKEN = "reader"
AS_OF_MAX = 50
TOPIC = "profiles.summaries.v1"


@pytest.fixture
def user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


class RecordingSend:
    """The ``send`` of KafkaChangePublisher, recording what would go to the broker."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None, list]] = []

    async def __call__(self, topic, key, value, headers) -> None:
        self.records.append((topic, key, value, list(headers)))

    def events(self) -> list[SummaryChanged]:
        return [SummaryChanged.model_validate_json(value) for _, _, value, _ in self.records]


@asynccontextmanager
async def serve(store, send: RecordingSend | None = None, *, ready=None):
    send = send or RecordingSend()
    app = create_api(store, KafkaChangePublisher(send, TOPIC), token=TOKEN,
                     read_tokens=(READ_TOKEN,), ready=ready or store_probe(store),
                     as_of_max_versions=AS_OF_MAX)
    # reads present the read token; the rollback requests carry the admin token themselves
    async with TestClient(TestServer(app),
                          headers={"Authorization": f"Bearer {READ_TOKEN}"}) as client:
        yield client


def record(user: str, version: int, summary: str | None = None) -> SummaryRecord:
    return SummaryRecord(
        user_id=user, version=version, previous_version=version - 1 if version > 1 else None,
        summary=summary or f"summary {version} ünï", model="m", window_id=f"w{version}",
        event_ids=(f"e{version}a", f"e{version}b"),
        usage=TokenUsage(prompt_tokens=10, completion_tokens=3), latency_ms=12.5,
        created_at=T0 + timedelta(hours=version),
    )


async def seed(store, user: str, versions: int) -> list[SummaryRecord]:
    records = [record(user, v) for v in range(1, versions + 1)]
    for r in records:
        await store.append(r)
    return records


async def test_current_summary_and_404(store, user):
    records = await seed(store, user, 3)
    async with serve(store) as client:
        resp = await client.get(f"/v1/users/{user}/summary")
        assert resp.status == 200
        assert SummaryRecord.model_validate(await resp.json()) == records[-1]
        resp = await client.get(f"/v1/users/{user}-missing/summary")
        assert resp.status == 404 and (await resp.json())["error"] == "not_found"


async def test_history_pages(store, user):
    await seed(store, user, 7)
    async with serve(store) as client:
        seen, pages, before = [], 0, None
        while True:
            params = {"limit": "3"} | ({"before_version": str(before)} if before else {})
            resp = await client.get(f"/v1/users/{user}/history", params=params)
            assert resp.status == 200
            page = await resp.json()
            seen.append([r["version"] for r in page["items"]])
            pages += 1
            before = page["next_before_version"]
            if before is None:
                break
        assert seen == [[7, 6, 5], [4, 3, 2], [1]]
        full = await (await client.get(f"/v1/users/{user}/history")).json()
        assert [SummaryRecord.model_validate(r) for r in full["items"]] == \
            list(reversed(await store.history(user)))
        empty = await (await client.get(f"/v1/users/{user}-missing/history")).json()
        assert empty["items"] == [] and empty["next_before_version"] is None


async def test_history_page_store_method(store, user):
    await seed(store, user, 5)
    assert [r.version for r in await store.history_page(user, 2)] == [5, 4]
    assert [r.version for r in await store.history_page(user, 2, 4)] == [3, 2]
    assert [r.version for r in await store.history_page(user, 10, 2)] == [1]
    assert await store.history_page(user, 10, 1) == []
    assert [r.version for r in await store.history(user)] == [1, 2, 3, 4, 5]  # unchanged


async def test_as_of(store, user):
    await seed(store, user, 3)  # created at T0+1h, +2h, +3h
    async with serve(store) as client:
        async def at(value: str):
            return await client.get(f"/v1/users/{user}/summary", params={"as_of": value})

        for value, version in [
            ("2026-03-01T13:00:00Z", 1),  # exactly version 1's created_at (inclusive)
            ("2026-03-01T14:59:59.999Z", 2),
            ("2026-03-01T17:00:00+02:00", 3),  # 15:00Z
            ("2099-01-01T00:00:00Z", 3),
        ]:
            resp = await at(value)
            assert resp.status == 200, (value, await resp.text())
            assert (await resp.json())["version"] == version, value
        assert (await at("2026-03-01T12:59:59.999Z")).status == 404
        resp = await at("2026-03-01T13:00:00")
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_as_of"


async def test_as_of_scans_past_its_page_size(store, user, monkeypatch):
    monkeypatch.setattr(cassandra_store, "_AS_OF_SCAN_PAGE", 2)
    await seed(store, user, 5)
    assert (await store.as_of(user, T0 + timedelta(hours=1, minutes=30))).version == 1
    assert (await store.as_of(user, T0 + timedelta(hours=4))).version == 4
    assert await store.as_of(user, T0) is None
    with pytest.raises(ValueError):
        await store.as_of(user, datetime(2026, 1, 1))  # noqa: DTZ001 (naive on purpose)


async def test_rollback_creates_the_next_version_and_its_change_event(store, user):
    records = await seed(store, user, 3)
    send = RecordingSend()
    async with serve(store, send) as client:
        resp = await client.post(f"/v1/users/{user}/rollback", headers=AUTH,
                                 json={"to_version": 1, "reason": "bad summary"})
        assert resp.status == 201, await resp.text()
        new = SummaryRecord.model_validate(await resp.json())
        current = await (await client.get(f"/v1/users/{user}/summary")).json()
    assert new.version == 4 and new.previous_version == 3
    assert new.summary == records[0].summary and new.model == ROLLBACK_MODEL
    assert new.event_ids == () and new.window_id == window_id(user, ("rollback", "1", "4"))
    assert current["version"] == 4 and current["summary"] == records[0].summary
    stored = await store.get_current(user)
    assert stored.version == 4 and stored.summary == records[0].summary
    assert [r.version for r in await store.history(user)] == [1, 2, 3, 4]
    ((topic, key, _, headers),) = send.records
    assert topic == TOPIC and key == user.encode()
    assert ("type", b"summary.changed") in headers
    assert send.events() == [change_event(stored, records[2].summary)]  # it replaced v3


async def test_rollback_refusals_leave_cassandra_untouched(store, user):
    await seed(store, user, 2)
    async with serve(store) as client:
        async def post(body, headers=AUTH):
            return await client.post(f"/v1/users/{user}/rollback", headers=headers, json=body)

        assert (await post({"to_version": 1, "reason": "r"}, headers={})).status == 401
        assert (await post({"to_version": 5, "reason": "r"})).status == 404
        assert (await post({"to_version": 2, "reason": "r"})).status == 409
        assert (await post({"to_version": 1, "reason": "r", "expected_version": 1})).status == 409
    assert [r.version for r in await store.history(user)] == [1, 2]


async def test_concurrent_rollbacks_exactly_one_wins(store, user):
    await seed(store, user, 3)
    send = RecordingSend()
    async with serve(store, send) as client:
        responses = await asyncio.gather(*(
            client.post(f"/v1/users/{user}/rollback", headers=AUTH,
                        json={"to_version": v, "reason": "race", "expected_version": 3})
            for v in (1, 2)
        ))
        statuses = sorted(r.status for r in responses)
        bodies = [await r.json() for r in responses]
    assert statuses == [201, 409], bodies
    loser = next(b for r, b in zip(responses, bodies, strict=True) if r.status == 409)
    assert loser["error"] == "version_conflict"
    history = await store.history(user)
    assert [r.version for r in history] == [1, 2, 3, 4]
    assert [e.version for e in send.events()] == [4]
    assert send.events() == [change_event(history[-1], history[-2].summary)]


async def test_racing_rollbacks_never_share_a_version(store, user):
    """Without ``expected_version`` each request rolls back from what it reads: the store's
    conditional append still lets only one writer claim each version."""
    await seed(store, user, 2)
    send = RecordingSend()
    async with serve(store, send) as client:
        responses = await asyncio.gather(*(
            client.post(f"/v1/users/{user}/rollback", headers=AUTH,
                        json={"to_version": 1, "reason": f"race {i}"})
            for i in range(4)
        ))
        statuses = [r.status for r in responses]
        bodies = [await r.json() for r in responses]
    assert set(statuses) <= {201, 409} and 201 in statuses, bodies
    won = sorted(b["version"] for s, b in zip(statuses, bodies, strict=True) if s == 201)
    history = await store.history(user)
    assert [r.version for r in history] == list(range(1, 3 + len(won)))
    assert won == list(range(3, 3 + len(won)))
    assert sorted(e.version for e in send.events()) == won


async def test_readyz_against_cassandra(store, cassandra_settings):
    async with serve(store) as client:
        resp = await client.get("/readyz")
        assert resp.status == 200
        body = await resp.json()
        assert body["status"] == "ready" and body["checks"]["store"] == "CassandraProfileStore"
    closed = await asyncio.to_thread(CassandraProfileStore.from_settings, cassandra_settings)
    await closed.aclose()
    async with serve(store, ready=store_probe(closed)) as client:
        resp = await client.get("/readyz")
        assert resp.status == 503
        body = await resp.json()
        assert body["status"] == "unavailable" and body["reason"]


def test_change_event_wire_format_is_the_contract(user):
    r = record(user, 2)
    event = change_event(r)
    assert json.loads(event.model_dump_json())["version"] == 2


async def test_reads_need_a_token_and_as_of_is_bounded_on_cassandra(store):
    """Access control and the as_of bound against the real store (its paged history scan)."""
    await seed(store, "u-deep", 60)  # created at T0 + 1h ... + 60h
    async with serve(store) as client:
        anonymous = await client.get("/v1/users/u-deep/summary",
                                     headers={"Authorization": ""})
        assert anonymous.status == 401
        ok = await client.get("/v1/users/u-deep/summary",
                              params={"as_of": (T0 + timedelta(hours=11, minutes=30)).isoformat()})
        assert ok.status == 200 and (await ok.json())["version"] == 11  # the 50th newest
        deep = await client.get("/v1/users/u-deep/summary",
                                params={"as_of": (T0 + timedelta(hours=10, minutes=30)).isoformat()})
        assert deep.status == 422 and (await deep.json())["error"] == "as_of_too_old"
