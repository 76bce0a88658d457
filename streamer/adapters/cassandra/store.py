"""Cassandra implementation of :class:`~streamer.ports.ProfileStore`.

One table, ``profile_log`` (migration 0008), holds a user's versions and its dedupe index in one
partition: version rows ``(kind 'v', seq = version)``, newest first, and index rows
``(kind 'e', key = event_id)`` with the dedupe TTL.  ``append`` is ONE conditional batch:
``INSERT <version row> IF NOT EXISTS`` plus the index rows of its events, a single Paxos round
that stores all of it or nothing.  Two writers cannot both win a version, and a writer whose
claim fails (a stale owner) leaves no index row behind.  The current version is the first
version row of the partition: no second table to keep in step, so reads never see a lagging
current row.
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

TABLE = "profile_log"
_RECORD_COLUMNS = (
    "previous_version, summary, model, window_id, event_ids, dropped_event_ids, prompt_tokens, "
    "completion_tokens, latency_ms, created_at, quality, triples, window_facts"
)
# a version row read back as a record (``seq`` is the version) / written from ``_to_values``
_COLUMNS = f"user_id, seq AS version, {_RECORD_COLUMNS}"
_INSERT_COLUMNS = f"user_id, seq, {_RECORD_COLUMNS}, kind, key"
_INSERT_VALUES = ", ".join("?" for _ in _INSERT_COLUMNS.split(",")[:-2]) + ", 'v', ''"
# a version row (values: ``_to_values``) / a dedupe row: (user_id, event_id, version, digest)
_INSERT_VERSION = f"INSERT INTO {{keyspace}}.{TABLE} ({_INSERT_COLUMNS}) VALUES ({_INSERT_VALUES})"
_INSERT_INDEX = (f"INSERT INTO {{keyspace}}.{TABLE} (user_id, kind, seq, key, version, digest) "
                 "VALUES (?, 'e', 0, ?, ?, ?) USING TTL {ttl}")
_VERSION_ROWS = "kind = 'v'"  # the slice of a user's partition that holds its versions
# the tables of schema 0001-0007, copied into profile_log by migration 0008; still deleted by
# ``forget`` (a keyspace migrated from them keeps their rows)
LEGACY_TABLES = ("summary_history", "summaries_current", "applied_events")
_TRIPLES = TypeAdapter(tuple[WindowTriple, ...])
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
        if number in _DATA_STEPS:
            _DATA_STEPS[number](session, settings)
        session.execute(
            f"INSERT INTO {ks}.schema_migrations (version, name, applied_at) "
            "VALUES (%s, %s, toTimestamp(now()))",
            (number, name),
        )
        applied.append(name)
        log.info("applied CQL migration %s", name)
    return applied


_COPY_PAGE = 1000


def _copy_into_profile_log(session: Session, settings: CassandraSettings) -> None:
    """Migration 0008's data step: every ``summary_history`` row becomes a version row of
    ``profile_log``, every ``applied_events`` row an index row with the TTL it had left.  Plain
    writes of the same values, so a step killed half-way is simply run again; meant to run
    with the workers stopped (README, "Tables"): a version stored in the old tables after
    the copy would not be seen."""
    ks = settings.keyspace
    claim = session.prepare(_INSERT_VERSION.format(keyspace=ks))
    index = session.prepare(_INSERT_INDEX.format(keyspace=ks, ttl="?"))
    legacy = _COLUMNS.replace("seq AS version", "version")
    copied = _copy_rows(session, f"SELECT {legacy} FROM {ks}.summary_history",
                        lambda row: (claim, (row.user_id, row.version, *row[2:])))
    indexed = _copy_rows(
        session, f"SELECT user_id, event_id, version, digest, TTL(version) AS ttl "
                 f"FROM {ks}.applied_events",
        lambda row: (index, (row.user_id, row.event_id, row.version, row.digest,
                             row.ttl or settings.dedupe_ttl_s)))
    if copied or indexed:
        log.info("migration 0008: copied %d versions and %d applied-event rows into %s",
                 copied, indexed, TABLE)


def _copy_rows(session: Session, select: str, write: Any) -> int:
    """Copy the rows of ``select`` with ``write(row) -> (statement, values)``, a page at a
    time with the page's writes in flight together; progress in the log."""
    copied = 0
    pending: list[Any] = []
    for row in session.execute(SimpleStatement(select, fetch_size=_COPY_PAGE)):
        statement, values = write(row)
        pending.append(session.execute_async(statement, values))
        if len(pending) >= _COPY_PAGE:
            copied += _drain(pending)
            pending = []
            log.info("migration 0008: %d rows copied ...", copied)
    return copied + _drain(pending)


def _drain(pending: list[Any]) -> int:
    """Wait for the writes in flight (raising the first failure); how many there were."""
    for future in pending:
        future.result()
    return len(pending)


# Python steps run right after the CQL of their migration, before it is recorded as applied
_DATA_STEPS: dict[int, Any] = {8: _copy_into_profile_log}


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
    """Versioned user summaries in Cassandra (one ``profile_log`` partition per user)."""

    def __init__(
        self, cluster: Cluster, session: Session, keyspace: str, *,
        dedupe_ttl_s: int = default_of(CassandraSettings, "dedupe_ttl_s"),
    ) -> None:
        self._cluster = cluster
        self._session = session
        self.keyspace = ks = keyspace
        log_table = f"{ks}.{TABLE}"
        prep = session.prepare
        versions = f"FROM {log_table} WHERE user_id = ? AND {_VERSION_ROWS}"
        self._latest: PreparedStatement = prep(f"SELECT {_COLUMNS} {versions} LIMIT 1")
        self._history: PreparedStatement = prep(f"SELECT {_COLUMNS} {versions}")
        self._claim: PreparedStatement = prep(
            f"{_INSERT_VERSION.format(keyspace=ks)} IF NOT EXISTS")
        self._page: PreparedStatement = prep(
            f"SELECT {_COLUMNS} {versions} AND seq < ? LIMIT ?")
        self._stamps: PreparedStatement = prep(
            f"SELECT seq AS version, created_at {versions} AND seq < ? LIMIT ?")
        self._one: PreparedStatement = prep(f"SELECT {_COLUMNS} {versions} AND seq = ?")
        self._mark_applied: PreparedStatement = prep(
            _INSERT_INDEX.format(keyspace=ks, ttl=int(dedupe_ttl_s)))
        self._applied: PreparedStatement = prep(
            f"SELECT key, digest FROM {log_table} "
            "WHERE user_id = ? AND kind = 'e' AND seq = 0 AND key IN ?")
        # forgetting a user: the suppression entry first, then every row of the user
        self._suppress: PreparedStatement = prep(
            f"INSERT INTO {ks}.forgotten_users (user_id, forgotten_at) VALUES (?, ?) USING TTL ?")
        self._suppressed: PreparedStatement = prep(
            f"SELECT user_id FROM {ks}.forgotten_users WHERE user_id = ?")
        self._versions: PreparedStatement = prep(f"SELECT seq {versions}")
        self._forget = [prep(f"DELETE FROM {ks}.{table} WHERE user_id = ?")
                        for table in (TABLE, *LEGACY_TABLES)]
        self._claim.serial_consistency_level = ConsistencyLevel.LOCAL_SERIAL
        for stmt in (self._latest, self._history, self._claim, self._page, self._stamps,
                     self._one, self._mark_applied, self._applied, self._suppress,
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
        """The user's highest stored version: the first version row of its partition."""
        rows = await _execute(self._session, self._latest, (user_id,))
        return _to_record(rows[0]) if rows else None

    async def scan_history(self) -> AsyncIterator[SummaryRecord]:
        """Every stored version of every user (a full scan of the version rows, in token
        order, one driver page at a time): reports and exports, never the hot path."""
        async for record in self._scan(""):
            yield record

    async def scan_current(self) -> AsyncIterator[SummaryRecord]:
        """Every user's current version (the first version row of each partition)."""
        async for record in self._scan(" PER PARTITION LIMIT 1"):
            yield record

    async def _scan(self, limit: str) -> AsyncIterator[SummaryRecord]:
        # a restriction on the first clustering column over all partitions: each partition is
        # read from the start of its version slice, the index rows before it are skipped
        statement = SimpleStatement(
            f"SELECT {_COLUMNS} FROM {self.keyspace}.{TABLE} WHERE {_VERSION_ROWS}{limit} "
            "ALLOW FILTERING", fetch_size=_SCAN_PAGE)
        rows = iter(await asyncio.to_thread(self._session.execute, statement))
        while True:
            page = await asyncio.to_thread(lambda: list(itertools.islice(rows, _SCAN_PAGE)))
            for row in page:
                yield _to_record(row)
            if len(page) < _SCAN_PAGE:
                return

    async def write_current(self, record: SummaryRecord) -> None:
        """Restore a version row (``streamer rebuild-current``, from the summaries topic): only
        where that version is missing, a stored version is never overwritten."""
        await _execute(self._session, self._claim, _to_values(record))

    async def history(self, user_id: str) -> list[SummaryRecord]:
        rows = await _execute(self._session, self._history, (user_id,))
        return [_to_record(r) for r in reversed(rows)]

    async def history_page(
        self, user_id: str, limit: int, before_version: int | None = None
    ) -> list[SummaryRecord]:
        """Up to ``limit`` versions older than ``before_version`` (all when None), newest first.

        One prepared ``WHERE user_id = ? AND kind = 'v' AND seq < ? LIMIT ?`` on the user's
        partition, whose version rows are already newest first.  Meant for pages (the API caps
        ``limit`` at 100); the driver returns at most its fetch size (5000) rows per call.
        """
        if limit < 1:
            raise ValueError("limit must be >= 1")
        bound = _NO_VERSION_BOUND if before_version is None else before_version
        rows = await _execute(self._session, self._page, (user_id, bound, limit))
        return [_to_record(r) for r in rows]

    async def forget(self, user_id: str, *, suppress_s: float = 0.0) -> int:
        """Delete every stored row of the user (versions and applied-event index, and its rows
        in the tables of schema 0001-0007 if the keyspace was migrated from them); with
        ``suppress_s``, first record the user as forgotten for that long (events still in
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

        Scans the user's version rows newest first, reading only ``(version, created_at)``
        in pages of 1000 and stopping at the first match, then reads that one row: the cost grows
        with the number of versions newer than the answer (all of them when there is
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
        """Store ``record`` and index its events: ONE conditional batch on the user's partition
        (``INSERT <version row> IF NOT EXISTS`` + an index row per event), a single Paxos round
        in which either all of it is written or nothing.  The caller passes the version it read
        as ``record.previous_version``: no re-read here.  A version that exists already (another
        writer, or a stale owner) raises VersionConflictError, and its index rows are not
        written either."""
        if record.version != (record.previous_version or 0) + 1:
            raise VersionConflictError(
                f"version {record.version} does not follow {record.previous_version}")
        rows = await _execute(self._session, self._index_batch(
            record.user_id, record.event_ids, record.version, digests,
            claim=_to_values(record)))
        if not rows or not rows[0].applied:
            raise VersionConflictError(f"version {record.version} already exists")

    async def mark_applied(self, user_id: str, event_ids: Sequence[str], version: int,
                           digests: Mapping[str, str] | None = None) -> None:
        """Record that ``version`` consumed ``event_ids`` (the dedupe index), without a claim:
        the updater's repair of index rows that a keyspace migrated from schema 0001-0007 may
        lack."""
        if event_ids:
            await _execute(self._session, self._index_batch(user_id, event_ids, version, digests))

    def _index_batch(self, user_id: str, event_ids: Sequence[str], version: int,
                     digests: Mapping[str, str] | None, *,
                     claim: Sequence[Any] | None = None) -> BatchStatement:
        """One batch on the user's partition: index rows, behind the version claim if given
        (a conditional batch: Paxos; without one, an unlogged batch: one plain write)."""
        batch = BatchStatement(
            batch_type=BatchType.LOGGED if claim else BatchType.UNLOGGED,
            consistency_level=ConsistencyLevel.LOCAL_QUORUM,
            serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL)
        if claim is not None:
            batch.add(self._claim, claim)
        digests = digests or {}
        for event_id in event_ids:
            batch.add(self._mark_applied, (user_id, event_id, version, digests.get(event_id)))
        return batch

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
        return {r.key: r.digest or "" for r in rows}

    async def aclose(self) -> None:
        await asyncio.to_thread(self._cluster.shutdown)


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
