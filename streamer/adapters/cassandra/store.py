"""Cassandra implementation of :class:`~streamer.ports.ProfileStore`.

Two tables (see ``migrations/``): ``summary_history`` keyed by ``(user_id, version)`` is the
source of truth, ``summaries_current`` is the one-row-per-user read path.  ``append`` claims the
version with one lightweight transaction on the history row (``IF NOT EXISTS``), so two writers
cannot both win, then writes the dedupe index and the current row in one unlogged batch on the
user's partition key (one plain write).  The current row is written ``USING TIMESTAMP
<created_at of the version>`` (strictly increasing per user), so the highest version wins
whatever the order of arrival (a lagging row left by a crash is repaired by the next write).
Reads of the previous summary come from the history, so they never see a stale current row.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from cassandra import (
    ConsistencyLevel,
    CoordinationFailure,
    OperationTimedOut,
    ReadTimeout,
    Unavailable,
    WriteTimeout,
)
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    Session,
)
from cassandra.policies import (
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    TokenAwarePolicy,
)
from cassandra.query import BatchStatement, BatchType, PreparedStatement, SimpleStatement
from pydantic import TypeAdapter

from schemas import QualityScore, SummaryRecord, TokenUsage, WindowFacts, WindowTriple

from ...errors import (
    AsOfTooDeepError,
    ConfigurationError,
    StoreUnavailableError,
    VersionConflictError,
)
from ...settings import CassandraSettings, default_of
from ..security import cassandra_connection_kwargs, cassandra_refusal

log = logging.getLogger(__name__)

# a node down or slow, or a read/write that failed on replicas (e.g. too many tombstones): the
# statement may succeed later; never a reason to give up on a user's events
UNAVAILABLE = (NoHostAvailable, OperationTimedOut, Unavailable, ReadTimeout, WriteTimeout,
               CoordinationFailure)

_COLUMNS = (
    "user_id, version, previous_version, summary, model, window_id, event_ids, "
    "dropped_event_ids, prompt_tokens, completion_tokens, latency_ms, created_at, quality, "
    "triples, window_facts"
)
_TRIPLES = TypeAdapter(tuple[WindowTriple, ...])
_PLACEHOLDERS = ", ".join("?" for _ in _COLUMNS.split(","))
_NO_VERSION_BOUND = 2**31 - 1  # versions are CQL ``int``: ``version < this`` matches them all
_AS_OF_SCAN_PAGE = 1000  # (version, created_at) pairs read per round trip by ``as_of``
_SCAN_PAGE = 1000  # rows per page of a full history scan (scan_history)


def execution_profile(settings: CassandraSettings) -> ExecutionProfile:
    """Requests go to a replica of their partition in the local DC (token-aware): the
    coordinator is then one of the replicas, which saves a network hop on every write and on
    each of the LWT's Paxos phases.  Statements without a routing key fall back to round robin
    over the local DC."""
    return ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=settings.local_dc)),
        request_timeout=settings.request_timeout_s,
        consistency_level=ConsistencyLevel.LOCAL_QUORUM,
        serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
    )


def connect(settings: CassandraSettings) -> tuple[Cluster, Session]:
    """Open a cluster connection (no keyspace), mapping failures to StoreUnavailableError."""
    profile = execution_profile(settings)
    cluster = Cluster(
        settings.hosts,
        port=settings.port,
        **cassandra_connection_kwargs(settings),
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        # reconnect quickly after an outage (the default backs off up to 10 minutes)
        reconnection_policy=ExponentialReconnectionPolicy(base_delay=0.5, max_delay=5.0),
        protocol_version=5,
        connect_timeout=10,
    )
    try:
        session = cluster.connect()
    except NoHostAvailable as exc:
        cluster.shutdown()
        refusal = cassandra_refusal(settings, exc.errors)
        if refusal:
            raise ConfigurationError(refusal) from exc
        hosts = ",".join(settings.hosts)
        hint = ("is it running, and does it expect the STREAMER_CASSANDRA__SSL_* / USERNAME "
                "settings given?" if settings.ssl_enabled or settings.username
                else "is it running? Locally: `make up`")
        raise StoreUnavailableError(
            f"cannot reach Cassandra at {hosts}:{settings.port} ({exc}); {hint}") from exc
    return cluster, session


def migrations() -> list[tuple[int, str, str]]:
    """Numbered CQL migrations shipped with the package: (number, name, text)."""
    out = []
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        if entry.name.endswith(".cql"):
            number = int(entry.name.split("_", 1)[0])
            out.append((number, entry.name, entry.read_text()))
    return sorted(out)


def migrate(session: Session, settings: CassandraSettings) -> list[str]:
    """Create the keyspace and apply pending migrations idempotently; return those applied."""
    ks = settings.keyspace
    session.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {settings.replication}"
    )
    session.execute(
        f"CREATE TABLE IF NOT EXISTS {ks}.schema_migrations "
        "(version int PRIMARY KEY, name text, applied_at timestamp)"
    )
    done = {row.version for row in session.execute(f"SELECT version FROM {ks}.schema_migrations")}
    applied = []
    for number, name, text in migrations():
        if number in done:
            continue
        for statement in _split_cql(text.replace("{keyspace}", ks)):
            session.execute(statement)
        session.execute(
            f"INSERT INTO {ks}.schema_migrations (version, name, applied_at) "
            "VALUES (%s, %s, toTimestamp(now()))",
            (number, name),
        )
        applied.append(name)
        log.info("applied CQL migration %s", name)
    return applied


def _split_cql(text: str) -> list[str]:
    lines = [ln for ln in text.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


async def _execute(session: Session, statement: Any, params: Sequence[Any] = ()) -> list[Any]:
    """Run a statement on the driver's threads and await it on the event loop; all pages of
    the result (the driver delivers ``fetch_size`` rows, 5000, per page)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[list[Any]] = loop.create_future()
    collected: list[Any] = []

    def ok(rows: Any) -> None:
        collected.extend(rows or [])
        if response.has_more_pages:
            response.start_fetching_next_page()  # the callbacks fire again with the next page
            return
        loop.call_soon_threadsafe(lambda: future.done() or future.set_result(collected))

    def err(exc: BaseException) -> None:
        loop.call_soon_threadsafe(lambda: future.done() or future.set_exception(exc))

    try:
        response = session.execute_async(statement, params)
        response.add_callbacks(ok, err)
        return await future
    except UNAVAILABLE as exc:
        raise StoreUnavailableError(f"Cassandra unavailable: {exc}") from exc


class CassandraProfileStore:
    """Versioned user summaries in Cassandra."""

    def __init__(
        self, cluster: Cluster, session: Session, keyspace: str, *,
        dedupe_ttl_s: int = default_of(CassandraSettings, "dedupe_ttl_s"),
    ) -> None:
        self._cluster = cluster
        self._session = session
        self.keyspace = ks = keyspace
        prep = session.prepare
        self._latest: PreparedStatement = prep(
            f"SELECT {_COLUMNS} FROM {ks}.summary_history WHERE user_id = ? LIMIT 1"
        )
        self._history: PreparedStatement = prep(
            f"SELECT {_COLUMNS} FROM {ks}.summary_history WHERE user_id = ?"
        )
        self._current: PreparedStatement = prep(
            f"SELECT {_COLUMNS} FROM {ks}.summaries_current WHERE user_id = ?"
        )
        self._claim: PreparedStatement = prep(
            f"INSERT INTO {ks}.summary_history ({_COLUMNS}) VALUES ({_PLACEHOLDERS}) IF NOT EXISTS"
        )
        # the current row is a plain write whose write timestamp is the version's created_at
        # (strictly increasing per user, see service._after): the highest version wins whatever
        # order writes land in, and rows written before with real timestamps are overtaken
        self._advance: PreparedStatement = prep(
            f"INSERT INTO {ks}.summaries_current ({_COLUMNS}) VALUES ({_PLACEHOLDERS}) "
            "USING TIMESTAMP ?"
        )
        self._page: PreparedStatement = prep(
            f"SELECT {_COLUMNS} FROM {ks}.summary_history WHERE user_id = ? AND version < ? LIMIT ?"
        )
        self._stamps: PreparedStatement = prep(
            f"SELECT version, created_at FROM {ks}.summary_history "
            "WHERE user_id = ? AND version < ? LIMIT ?"
        )
        self._one: PreparedStatement = prep(
            f"SELECT {_COLUMNS} FROM {ks}.summary_history WHERE user_id = ? AND version = ?"
        )
        self._mark_applied: PreparedStatement = prep(
            f"INSERT INTO {ks}.applied_events (user_id, event_id, version, digest) "
            f"VALUES (?, ?, ?, ?) USING TTL {int(dedupe_ttl_s)}"
        )
        self._applied: PreparedStatement = prep(
            f"SELECT event_id, digest FROM {ks}.applied_events WHERE user_id = ? AND event_id IN ?"
        )
        # forgetting a user: the suppression entry first, then every row of the user
        self._suppress: PreparedStatement = prep(
            f"INSERT INTO {ks}.forgotten_users (user_id, forgotten_at) VALUES (?, ?) USING TTL ?")
        self._suppressed: PreparedStatement = prep(
            f"SELECT user_id FROM {ks}.forgotten_users WHERE user_id = ?")
        self._versions: PreparedStatement = prep(
            f"SELECT version FROM {ks}.summary_history WHERE user_id = ?")
        self._forget = [prep(f"DELETE FROM {ks}.{table} WHERE user_id = ?")
                        for table in ("summary_history", "summaries_current", "applied_events")]
        for stmt in (self._claim,):
            stmt.consistency_level = ConsistencyLevel.LOCAL_QUORUM
            stmt.serial_consistency_level = ConsistencyLevel.LOCAL_SERIAL
        for stmt in (self._latest, self._history, self._current, self._page, self._stamps,
                     self._one, self._advance, self._mark_applied, self._suppress,
                     self._suppressed, self._versions, *self._forget):
            stmt.consistency_level = ConsistencyLevel.LOCAL_QUORUM

    @classmethod
    def from_settings(cls, settings: CassandraSettings, *, migrate_schema: bool = True):
        cluster, session = connect(settings)
        try:
            if migrate_schema:
                migrate(session, settings)
            return cls(cluster, session, settings.keyspace, dedupe_ttl_s=settings.dedupe_ttl_s)
        except Exception:
            cluster.shutdown()
            raise

    async def get_current(self, user_id: str) -> SummaryRecord | None:
        rows = await _execute(self._session, self._latest, (user_id,))
        return _to_record(rows[0]) if rows else None

    async def scan_history(self) -> AsyncIterator[SummaryRecord]:
        """Every stored version of every user (a full scan of the history table, in token
        order, one driver page at a time): reports and exports, never the hot path."""
        async for record in self._scan("summary_history"):
            yield record

    async def _scan(self, table: str) -> AsyncIterator[SummaryRecord]:
        statement = SimpleStatement(f"SELECT {_COLUMNS} FROM {self.keyspace}.{table}",
                                    fetch_size=_SCAN_PAGE)
        rows = iter(await asyncio.to_thread(self._session.execute, statement))
        while True:
            page = await asyncio.to_thread(lambda: list(itertools.islice(rows, _SCAN_PAGE)))
            for row in page:
                yield _to_record(row)
            if len(page) < _SCAN_PAGE:
                return

    async def scan_current(self) -> AsyncIterator[SummaryRecord]:
        """Every user's current row (a full scan of ``summaries_current``, a page at a time)."""
        async for record in self._scan("summaries_current"):
            yield record

    async def write_current(self, record: SummaryRecord) -> None:
        """Write a current row only (``streamer rebuild-current``), with the version's write
        timestamp: a row that is newer already stays."""
        await _execute(self._session, self._advance, (*_to_values(record), _write_ts(record)))

    async def read_current_row(self, user_id: str) -> SummaryRecord | None:
        """The ``summaries_current`` row (the read path), which may lag after a crash."""
        rows = await _execute(self._session, self._current, (user_id,))
        return _to_record(rows[0]) if rows else None

    async def history(self, user_id: str) -> list[SummaryRecord]:
        rows = await _execute(self._session, self._history, (user_id,))
        return [_to_record(r) for r in reversed(rows)]

    async def history_page(
        self, user_id: str, limit: int, before_version: int | None = None
    ) -> list[SummaryRecord]:
        """Up to ``limit`` versions older than ``before_version`` (all when None), newest first.

        One prepared ``WHERE user_id = ? AND version < ? LIMIT ?`` on the history partition,
        whose clustering order is already newest first.  Meant for pages (the API caps ``limit``
        at 100); the driver returns at most its fetch size (5000) rows per call.
        """
        if limit < 1:
            raise ValueError("limit must be >= 1")
        bound = _NO_VERSION_BOUND if before_version is None else before_version
        rows = await _execute(self._session, self._page, (user_id, bound, limit))
        return [_to_record(r) for r in rows]

    async def forget(self, user_id: str, *, suppress_s: float = 0.0) -> int:
        """Delete every stored row of the user (history, current row, applied-event index);
        with ``suppress_s``, first record the user as forgotten for that long (events still in
        flight are then dropped by the updater).  Returns the number of versions deleted."""
        if suppress_s > 0:
            await _execute(self._session, self._suppress,
                           (user_id, datetime.now(UTC), max(1, int(suppress_s))))
        versions = len(await _execute(self._session, self._versions, (user_id,)))
        for statement in self._forget:
            await _execute(self._session, statement, (user_id,))
        return versions

    async def suppressed(self, user_id: str) -> bool:
        """Whether the user was forgotten within the suppression time."""
        return bool(await _execute(self._session, self._suppressed, (user_id,)))

    async def as_of(self, user_id: str, when: datetime, *,
                    max_versions: int | None = None) -> SummaryRecord | None:
        """The version that was current at ``when``: the highest version with ``created_at <= when``.

        Scans the user's history partition newest first, reading only ``(version, created_at)``
        in pages of 1000 and stopping at the first match, then reads that one row: the cost grows
        with the number of versions newer than the answer (the whole partition when there is
        none), so ``max_versions`` bounds it: beyond that many versions examined,
        :class:`AsOfTooDeepError`.  ``created_at`` is stored with millisecond precision.
        """
        if when.tzinfo is None:
            raise ValueError("as_of needs a timezone-aware datetime")
        before = _NO_VERSION_BOUND
        examined = 0
        while True:
            rows = await _execute(self._session, self._stamps, (user_id, before, _AS_OF_SCAN_PAGE))
            for row in rows:
                examined += 1
                if max_versions is not None and examined > max_versions:
                    raise AsOfTooDeepError(
                        f"as_of would examine more than {max_versions} versions")
                created = row.created_at
                if created is None:
                    continue
                if created.tzinfo is None:
                    created = created.replace(tzinfo=UTC)
                if created <= when:
                    found = await _execute(self._session, self._one, (user_id, row.version))
                    return _to_record(found[0]) if found else None
            if len(rows) < _AS_OF_SCAN_PAGE:
                return None
            before = rows[-1].version

    async def append(self, record: SummaryRecord,
                     digests: Mapping[str, str] | None = None) -> None:
        """Claim ``record.version`` (one Paxos round), then index its events and move the
        current row (one plain write: an unlogged batch on the user's partition key).  The caller
        passes the version it read as ``record.previous_version``: no re-read here.  A version
        that exists already (another writer, or a stale owner) raises VersionConflictError."""
        if record.version != (record.previous_version or 0) + 1:
            raise VersionConflictError(
                f"version {record.version} does not follow {record.previous_version}")
        values = _to_values(record)
        rows = await _execute(self._session, self._claim, values)
        if not rows or not rows[0].applied:
            raise VersionConflictError(f"version {record.version} already exists")
        # After the claim only: a stale owner whose claim failed must not touch either.  The
        # current row and the dedupe index share the partition key (user_id), so one unlogged
        # batch is one mutation on one replica set: one request instead of two.  On a loaded
        # node requests, not bytes, are the cost: 0.815 of a bare INSERT IF NOT EXISTS against
        # 0.77 as two parallel writes, 8 rounds side by side (`make bench` store: 0.755-0.795
        # over two full runs, with the rest of the benchmarks loading the node).  Idempotent: a retry
        # rewrites the same cells; a crash before it is repaired by the next update
        # (service: events of the latest version are indexed again), and the current row by
        # the next version (write timestamp = created_at).
        digests = digests or {}
        batch = BatchStatement(batch_type=BatchType.UNLOGGED,
                               consistency_level=ConsistencyLevel.LOCAL_QUORUM)
        batch.add(self._advance, (*values, _write_ts(record)))
        for event_id in record.event_ids:
            batch.add(self._mark_applied,
                      (record.user_id, event_id, record.version, digests.get(event_id)))
        await _execute(self._session, batch)

    async def mark_applied(self, user_id: str, event_ids: Sequence[str], version: int,
                           digests: Mapping[str, str] | None = None) -> None:
        """Record that ``version`` consumed ``event_ids`` (the dedupe index)."""
        if not event_ids:
            return
        digests = digests or {}
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)  # one partition
        for event_id in event_ids:
            batch.add(self._mark_applied, (user_id, event_id, version, digests.get(event_id)))
        await _execute(self._session, batch)

    async def applied_event_ids(self, user_id: str, event_ids: Sequence[str]) -> set[str]:
        """Which of ``event_ids`` a stored version of the user already consumed (within the
        dedupe horizon)."""
        if not event_ids:
            return set()
        return set(await self.applied_digests(user_id, event_ids))

    async def applied_digests(self, user_id: str, event_ids: Sequence[str]) -> dict[str, str]:
        """Of ``event_ids``, those a stored version consumed, with their recorded digest."""
        if not event_ids:
            return {}
        rows = await _execute(self._session, self._applied, (user_id, list(event_ids)))
        return {r.event_id: r.digest or "" for r in rows}

    async def aclose(self) -> None:
        await asyncio.to_thread(self._cluster.shutdown)


def _write_ts(r: SummaryRecord) -> int:
    """Write timestamp (µs) of a version's current-row write: its created_at at the ms precision
    it is stored with, so a later version always has a larger one."""
    return int(r.created_at.timestamp() * 1000) * 1000


def _to_values(r: SummaryRecord) -> tuple[Any, ...]:
    return (
        r.user_id,
        r.version,
        r.previous_version,
        r.summary,
        r.model,
        r.window_id,
        list(r.event_ids),
        list(r.dropped_event_ids),
        r.usage.prompt_tokens,
        r.usage.completion_tokens,
        r.latency_ms,
        r.created_at,
        r.quality.model_dump_json() if r.quality is not None else None,
        _TRIPLES.dump_json(r.triples).decode() if r.triples else None,
        r.window.model_dump_json() if r.window is not None else None,
    )


def _to_record(row: Any) -> SummaryRecord:
    created = row.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return SummaryRecord(
        user_id=row.user_id,
        version=row.version,
        previous_version=row.previous_version,
        summary=row.summary,
        model=row.model,
        window_id=row.window_id,
        event_ids=tuple(row.event_ids or ()),
        dropped_event_ids=tuple(row.dropped_event_ids or ()),
        usage=TokenUsage(
            prompt_tokens=row.prompt_tokens or 0, completion_tokens=row.completion_tokens or 0
        ),
        latency_ms=row.latency_ms or 0.0,
        created_at=created,
        quality=QualityScore.model_validate_json(row.quality) if row.quality else None,
        triples=_TRIPLES.validate_json(row.triples) if row.triples else (),
        window=WindowFacts.model_validate_json(row.window_facts) if row.window_facts else None,
    )
