"""CassandraProfileStore against a real Cassandra."""

import asyncio
from datetime import UTC, datetime

import pytest

from schemas import SummaryRecord, TokenUsage
from streamer.adapters.cassandra.store import _to_values, connect, migrate
from streamer.errors import StoreUnavailableError, VersionConflictError
from streamer.settings import CassandraSettings


def record(user, version, summary="s", events=("e",)):
    return SummaryRecord(
        user_id=user, version=version, previous_version=version - 1 if version > 1 else None,
        summary=summary, model="m", window_id=f"w{version}", event_ids=tuple(events),
        usage=TokenUsage(prompt_tokens=10, completion_tokens=3), latency_ms=12.5,
        created_at=datetime(2026, 1, 1, 0, 0, version, tzinfo=UTC),
    )


def test_migrations_are_idempotent_and_recorded(cassandra_settings):
    cluster, session = connect(cassandra_settings)
    try:
        migrate(session, cassandra_settings)
        assert migrate(session, cassandra_settings) == []
        rows = list(session.execute(
            f"SELECT version, name FROM {cassandra_settings.keyspace}.schema_migrations"))
        assert sorted(r.name for r in rows) == ["0001_summaries.cql", "0002_applied_events.cql",
                                                  "0003_pending.cql", "0004_applied_digest.cql",
                                                  "0005_quality.cql", "0006_window_facts.cql",
                                                  "0007_forgotten_users.cql",
                                                  "0008_profile_log.cql"]
    finally:
        cluster.shutdown()


async def test_versions_append_read_and_history(store):
    user = "user-hist"
    assert await store.get_current(user) is None
    for v in (1, 2, 3):
        await store.append(record(user, v, summary=f"summary {v} ünï", events=(f"e{v}a", f"e{v}b")))
    current = await store.get_current(user)
    assert current == record(user, 3, summary="summary 3 ünï", events=("e3a", "e3b"))
    assert [r.version for r in await store.history(user)] == [1, 2, 3]


async def test_two_writers_cannot_both_win_a_version(store):
    user = "user-race"
    await store.append(record(user, 1))
    results = await asyncio.gather(
        *(store.append(record(user, 2, summary=f"writer {i}")) for i in range(4)),
        return_exceptions=True,
    )
    winners = [r for r in results if r is None]
    assert len(winners) == 1
    assert all(isinstance(r, VersionConflictError) for r in results if r is not None)
    assert [r.version for r in await store.history(user)] == [1, 2]


async def test_stale_writer_is_refused(store):
    user = "user-stale"
    await store.append(record(user, 1))
    await store.append(record(user, 2))
    with pytest.raises(VersionConflictError):
        await store.append(record(user, 2))
    # the writer passes the version it read: a record that does not follow it is refused
    # without a read (one Paxos round per version, nothing else)
    with pytest.raises(VersionConflictError):
        await store.append(record(user, 4).model_copy(update={"previous_version": 2}))


async def test_a_refused_claim_writes_no_index_rows(store):
    """The claim and the index rows are one conditional batch: a writer that loses the version
    (a stale owner) leaves nothing behind that would mark its events as applied."""
    user = "user-refused"
    await store.append(record(user, 1, events=("a",)))
    with pytest.raises(VersionConflictError):
        await store.append(record(user, 1, summary="stale", events=("a", "stale-only")))
    assert await store.applied_digests(user, ["a", "stale-only"]) == {"a": ""}
    assert [r.summary for r in await store.history(user)] == ["s"]


async def test_current_is_the_highest_version_row(store):
    user = "user-cur"
    for v in (1, 2, 3):
        await store.append(record(user, v, events=tuple(f"e{v}{i}" for i in range(5))))
    assert (await store.get_current(user)).version == 3
    assert [r.version for r in await store.history_page(user, 2)] == [3, 2]
    assert [r.version for r in await store.history_page(user, 5, before_version=2)] == [1]
    current = {r.user_id: r.version async for r in store.scan_current()}
    assert current[user] == 3
    assert sorted([r.version async for r in store.scan_history() if r.user_id == user]) == [
        1, 2, 3]


async def test_migration_copies_the_tables_of_schema_1_to_7(store, cassandra_settings):
    """A keyspace written before migration 0008: its versions and dedupe index are copied into
    profile_log (the index with the TTL it had left), and reads see them."""
    ks = cassandra_settings.keyspace
    session = store._session
    user = "user-legacy"
    session.execute(f"DELETE FROM {ks}.schema_migrations WHERE version = 8")
    for v, events in ((1, ["l1"]), (2, ["l2", "l3"])):
        session.execute(
            f"INSERT INTO {ks}.summary_history (user_id, version, previous_version, summary, "
            "model, window_id, event_ids, prompt_tokens, completion_tokens, latency_ms, "
            "created_at, quality) VALUES (%s, %s, %s, %s, 'm', %s, %s, 1, 2, 3.5, %s, null)",
            (user, v, v - 1 or None, f"legacy {v}", f"w{v}", events,
             datetime(2026, 1, 1, 0, 0, v, tzinfo=UTC)))
        for e in events:
            session.execute(f"INSERT INTO {ks}.applied_events (user_id, event_id, version, digest) "
                            "VALUES (%s, %s, %s, %s) USING TTL 5000", (user, e, v, f"d-{e}"))
    assert migrate(session, cassandra_settings) == ["0008_profile_log.cql"]
    history = await store.history(user)
    assert [(r.version, r.summary, r.event_ids) for r in history] == [
        (1, "legacy 1", ("l1",)), (2, "legacy 2", ("l2", "l3"))]
    assert history[1].usage == TokenUsage(prompt_tokens=1, completion_tokens=2)
    assert await store.applied_digests(user, ["l1", "l3", "x"]) == {"l1": "d-l1", "l3": "d-l3"}
    ttl = session.execute(f"SELECT TTL(version) AS t FROM {ks}.profile_log WHERE user_id = %s "
                          "AND kind = 'e' AND seq = 0 AND key = 'l1'", (user,)).one().t
    assert 4900 < ttl <= 5000
    await store.append(record(user, 3))  # and the user goes on from its copied version
    assert (await store.get_current(user)).previous_version == 2
    assert await store.forget(user) == 3
    assert list(session.execute(f"SELECT * FROM {ks}.summary_history WHERE user_id = %s",
                                (user,))) == []


def test_unreachable_cassandra_says_what_to_do():
    with pytest.raises(StoreUnavailableError, match="make up"):
        connect(CassandraSettings(port=1, hosts=["127.0.0.1"]))


def test_version_writes_carry_the_users_routing_key(store):
    """Token-aware routing needs a routing key: the claim and the dedupe index rows are bound
    on user_id, so their batch goes to the user's replicas."""
    for stmt in (store._claim, store._mark_applied):
        assert stmt.routing_key_indexes == [0], stmt.query_string
    values = _to_values(record("routed", 1))
    batch = store._index_batch("routed", ["e"], 1, None, claim=values)
    assert batch.routing_key == store._claim.bind(values).routing_key == b"routed"


async def test_applied_event_ids_index_answers_dedupe_queries(store):
    user = "user-dedupe"
    await store.append(record(user, 1, events=("a", "b")))
    await store.append(record(user, 2, events=("c",)))
    assert await store.applied_event_ids(user, ["a", "c", "z"]) == {"a", "c"}
    assert await store.applied_event_ids(user, []) == set()
    assert await store.applied_event_ids("nobody", ["a"]) == set()


async def test_dedupe_index_is_repaired_for_a_version_without_index_rows(
    store, cassandra_settings
):
    from streamer.adapters.memory.publish import CollectingPublisher
    from streamer.devtools.fakes import ScriptedSummaryModel
    from streamer.services.updater import Outcome, ProfileUpdater, UpdatePolicy
    from tests.factories import pairwise

    user = "user-crash"
    ks = cassandra_settings.keyspace
    # version 1 stored without its index rows: a version copied from schema 0001-0007 whose
    # applied_events rows were missing (a crash between the two writes of that schema)
    store._session.execute(
        f"INSERT INTO {ks}.profile_log (user_id, kind, seq, key, summary, model, window_id, "
        "event_ids, prompt_tokens, completion_tokens, latency_ms, created_at) "
        "VALUES (%s, 'v', 1, '', 'one', 'm', 'w1', ['e1'], 0, 0, 0, toTimestamp(now()))",
        (user,),
    )
    updater = ProfileUpdater(store, ScriptedSummaryModel(lambda r: "<think>t</think>\n\nok"),
                             CollectingPublisher(), UpdatePolicy(output_backoff_s=0))
    replay = await updater.apply(user, [pairwise("e1", user)])  # the redelivery
    assert replay.outcome is Outcome.DUPLICATE
    assert await store.applied_event_ids(user, ["e1"]) == {"e1"}  # index repaired
    await updater.apply(user, [pairwise("e2", user)])  # a newer version...
    late = await updater.apply(user, [pairwise("e1", user)])  # ...then a late duplicate
    assert late.outcome is Outcome.DUPLICATE
    assert [h.event_ids for h in await store.history(user)] == [("e1",), ("e2",)]


async def test_applied_digests_are_kept_with_the_dedupe_index(store):
    user = "user-digest"
    await store.append(record(user, 1, events=("a", "b")), {"a": "da", "b": "db"})
    assert await store.applied_digests(user, ["a", "b", "c"]) == {"a": "da", "b": "db"}
    await store.append(record(user, 2, events=("c",)))  # no digests: recorded as unknown
    assert await store.applied_digests(user, ["c"]) == {"c": ""}


async def test_a_large_window_is_one_conditional_batch(store):
    """A version of 2,000 events with a 20 kB summary (well past Cassandra's batch size
    warning, 5 KiB) is stored with all its dedupe rows: single-partition batches are not
    size-checked, and the claim and the rows stay one Paxos round."""
    user = "user-large"
    events = tuple(f"big-{i:05d}" for i in range(2000))
    await store.append(record(user, 1, summary="x" * 20_000, events=events))
    assert (await store.get_current(user)).event_ids == events
    assert await store.applied_event_ids(user, list(events)) == set(events)
