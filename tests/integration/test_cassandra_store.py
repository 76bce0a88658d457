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
                                                  "0007_forgotten_users.cql"]
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
    assert (await store.read_current_row(user)).version == 3


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


async def test_lagging_current_row_is_repaired_by_next_write(store, cassandra_settings):
    user = "user-lag"
    await store.append(record(user, 1))
    # simulate a crash between claiming version 2 in the history and moving the current row
    ks = cassandra_settings.keyspace
    store._session.execute(
        f"INSERT INTO {ks}.summary_history (user_id, version, previous_version, summary, model, "
        "window_id, event_ids, prompt_tokens, completion_tokens, latency_ms, created_at) "
        "VALUES (%s, 2, 1, 'two', 'm', 'w2', ['e2'], 0, 0, 0, toTimestamp(now()))",
        (user,),
    )
    assert (await store.read_current_row(user)).version == 1
    assert (await store.get_current(user)).version == 2  # reads come from the history
    await store.append(record(user, 3))
    assert (await store.read_current_row(user)).version == 3


def test_unreachable_cassandra_says_what_to_do():
    with pytest.raises(StoreUnavailableError, match="make up"):
        connect(CassandraSettings(port=1, hosts=["127.0.0.1"]))


def test_version_writes_carry_the_users_routing_key(store):
    """Token-aware routing needs a routing key: the claim, the current row and the dedupe
    index rows are all bound on user_id, so the batch after the claim goes to its replicas."""
    from cassandra.query import BatchStatement

    for stmt in (store._claim, store._advance, store._mark_applied):
        assert stmt.routing_key_indexes == [0], stmt.query_string
    values = _to_values(record("routed", 1))
    batch = BatchStatement()
    batch.add(store._advance, (*values, 1))
    batch.add(store._mark_applied, ("routed", "e", 1, None))
    assert batch.routing_key == store._claim.bind(values).routing_key == b"routed"


async def test_applied_event_ids_index_answers_dedupe_queries(store):
    user = "user-dedupe"
    await store.append(record(user, 1, events=("a", "b")))
    await store.append(record(user, 2, events=("c",)))
    assert await store.applied_event_ids(user, ["a", "c", "z"]) == {"a", "c"}
    assert await store.applied_event_ids(user, []) == set()
    assert await store.applied_event_ids("nobody", ["a"]) == set()


async def test_dedupe_index_is_repaired_after_a_crash_between_claim_and_index(
    store, cassandra_settings
):
    from streamer.adapters.memory.publish import CollectingPublisher
    from streamer.devtools.fakes import ScriptedSummaryModel
    from streamer.services.updater import Outcome, ProfileUpdater, UpdatePolicy
    from tests.factories import pairwise

    user = "user-crash"
    ks = cassandra_settings.keyspace
    # version 1 claimed in the history, but the worker died before indexing its events
    store._session.execute(
        f"INSERT INTO {ks}.summary_history (user_id, version, summary, model, window_id, "
        "event_ids, prompt_tokens, completion_tokens, latency_ms, created_at) "
        "VALUES (%s, 1, 'one', 'm', 'w1', ['e1'], 0, 0, 0, toTimestamp(now()))",
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
