"""Export, import and rebuild (SQLite and in-memory stores): a full-history export restores
versions exactly; current-only exports and non-empty stores are refused clearly; the current
rows rebuild from change events, deletions honoured."""

from __future__ import annotations

import pytest

from schemas import SummaryDeleted, ce_headers
from streamer.adapters.memory.store import InMemoryProfileStore
from streamer.adapters.sqlite.store import SqliteProfileStore
from streamer.errors import ConfigurationError
from streamer.services.portability import (
    export_records,
    import_records,
    read_export,
    rebuild_current,
)
from streamer.services.updater import change_event
from tests.unit.entrypoints.test_api import seed

pytestmark = pytest.mark.unit


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request):
    return InMemoryProfileStore if request.param == "memory" else (
        lambda: SqliteProfileStore(":memory:"))


async def exported(store, **kw) -> list[str]:
    return [r.model_dump_json() async for r in export_records(store, **kw)]


async def test_a_full_history_export_restores_every_version(make_store):
    source = make_store()
    for user, n in (("u1", 3), ("u2", 2)):
        await seed(source, user, n)
    lines = await exported(source, history=True)
    assert len(lines) == 5
    target = make_store()
    report = await import_records(target, read_export(lines))
    assert report.as_dict() == {"users": 2, "versions": 5, "skipped_existing_users": 0}
    for user in ("u1", "u2"):
        assert await target.history(user) == await source.history(user)
    assert await target.applied_event_ids("u1", ["e1", "e3"]) == {"e1", "e3"}  # dedupe rebuilt
    again = await import_records(target, read_export(lines))  # not merged into existing users
    assert again.users == 0 and again.skipped_existing == ["u1", "u2"]


async def test_current_only_exports_and_filters(make_store):
    source = make_store()
    for user, n in (("u1", 3), ("x2", 2)):
        await seed(source, user, n)
    current = await exported(source, history=False)
    assert [r.version for r in read_export(current)] == [3, 2]
    only_u = await exported(source, history=True, admits=lambda r: r.user_id.startswith("u"))
    assert {r.user_id for r in read_export(only_u)} == {"u1"}
    with pytest.raises(ConfigurationError, match="full-history export"):
        await import_records(make_store(), read_export(current))
    with pytest.raises(ConfigurationError, match="line 2"):
        list(read_export([current[0], "{not json"]))


async def test_rebuild_current_from_change_events_honours_deletions():
    source = SqliteProfileStore(":memory:")
    records = {user: await seed(source, user, n) for user, n in (("u1", 3), ("u2", 2))}
    topic = []
    for user in ("u1", "u2"):
        for r in records[user]:
            event = change_event(r)
            topic.append((user.encode(), event.model_dump_json().encode(),
                          ce_headers(event, "/p")))
    gone = SummaryDeleted(event_id="d", user_id="u2", deleted_versions=2,
                          occurred_at=records["u2"][-1].created_at)
    topic += [(b"u2", gone.model_dump_json().encode(), ce_headers(gone, "/p")), (b"u2", None, [])]

    async def feed():
        for item in topic:
            yield item

    target = SqliteProfileStore(":memory:")
    report = await rebuild_current(target, feed())
    assert report.as_dict() == {"records": 7, "current_rows_written": 5, "users_deleted": 2,
                                "skipped": 0}
    current = [r async for r in target.scan_current()]
    assert [(r.user_id, r.version, r.summary) for r in current] == [
        ("u1", 3, records["u1"][-1].summary)]
