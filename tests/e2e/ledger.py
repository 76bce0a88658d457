"""The ledger: what was produced, what was stored, what was announced -- and whether they agree.

Used by the fault-injection suite (``test_faults.py``) after every scenario:

- every produced valid event id is consumed by exactly one stored version of its user (nothing
  missing, nothing applied twice, nothing invented, nothing filed under another user);
- each user's versions are contiguous ``1..n`` and chained by ``previous_version``;
- each stored version has exactly one DISTINCT change event (by ``event_id``; copies are allowed,
  the stream is at-least-once) whose content equals the stored version, and every copy of an
  ``event_id`` is identical; there is no change event for a version that was never stored;
- stored summaries are never model garbage (``</think>`` or empty).

Everything that is checked is counted in the :class:`LedgerReport`; properties that are not part
of the contract being asserted (a served current version below the highest stored one, a missing
dedupe index row, change events published out of version order) are reported as ``warnings``.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from schemas import SummaryChanged, SummaryRecord, TokenUsage

_COLUMNS = (
    "user_id, seq AS version, previous_version, summary, model, window_id, event_ids, "
    "dropped_event_ids, prompt_tokens, completion_tokens, latency_ms, created_at"
)
MAX_LISTED = 25  # problems listed in a failure message


class LedgerError(AssertionError):
    """The ledger does not balance; the message lists the problems and the counts."""

    def __init__(self, problems: list[str], report: LedgerReport) -> None:
        self.problems = problems
        self.report = report
        shown = "\n  - ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        super().__init__(
            f"ledger check failed: {len(problems)} problem(s)\n  - {shown}{more}\n"
            f"counts: {report.counts()}"
        )


@dataclass
class LedgerReport:
    users: int = 0
    events_checked: int = 0
    versions: int = 0
    change_events: int = 0  # every copy read from the change topic
    distinct_change_events: int = 0
    duplicate_change_copies: int = 0  # copies beyond the first of an event_id
    carried_forward_versions: int = 0  # versions made without a model call
    dropped_events: int = 0  # recorded in a version but left out of its prompt
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if isinstance(v, int)}

    def as_dict(self) -> dict:
        d = asdict(self)
        d["warnings"] = d["warnings"][:MAX_LISTED]
        d["problems"] = d["problems"][:MAX_LISTED]
        return d


def change_event_id(user_id: str, version: int) -> str:
    """The documented deterministic id of the change event of ``(user, version)``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{user_id}/{version}"))


def _ms(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


def _diff_change(change: SummaryChanged, record: SummaryRecord) -> list[str]:
    """Fields where a change event differs from the stored version (created_at at the store's
    millisecond precision)."""
    diffs = []
    for name in ("user_id", "version", "previous_version", "summary", "model", "window_id",
                 "event_ids", "dropped_event_ids", "usage"):
        if getattr(change, name) != getattr(record, name):
            diffs.append(f"{name}: change={getattr(change, name)!r:.80} "
                         f"stored={getattr(record, name)!r:.80}")
    if abs(change.latency_ms - record.latency_ms) > 1e-6 * max(1.0, abs(record.latency_ms)):
        diffs.append(f"latency_ms: change={change.latency_ms} stored={record.latency_ms}")
    if abs(_ms(change.occurred_at) - _ms(record.created_at)) > 1:
        diffs.append(f"occurred_at/created_at: change={change.occurred_at.isoformat()} "
                     f"stored={record.created_at.isoformat()}")
    return diffs


def _diff_copies(a: SummaryChanged, b: SummaryChanged) -> list[str]:
    """Fields where two copies of one change event differ (timestamps at millisecond precision,
    the store's, since a copy may be republished from the stored version)."""
    da, db = a.model_dump(exclude={"occurred_at"}), b.model_dump(exclude={"occurred_at"})
    diffs = [f"{k}: {da[k]!r:.80} vs {db.get(k)!r:.80}" for k in da if da[k] != db.get(k)]
    if abs(_ms(a.occurred_at) - _ms(b.occurred_at)) > 1:
        diffs.append(f"occurred_at: {a.occurred_at.isoformat()} vs {b.occurred_at.isoformat()}")
    return diffs


def check_ledger(
    produced_event_ids_by_user: Mapping[str, Iterable[str]],
    changes: Iterable[SummaryChanged],
    history_by_user: Mapping[str, Sequence[SummaryRecord]],
    *,
    current_by_user: Mapping[str, SummaryRecord] | None = None,
    applied_by_user: Mapping[str, Mapping[str, int]] | None = None,
    no_model: str = "prefstream-carry-forward",
    raise_on_problems: bool = True,
) -> LedgerReport:
    """Check produced events against stored versions and change events; raise LedgerError.

    ``produced_event_ids_by_user``: every VALID event produced (duplicates allowed; each distinct
    id must be applied exactly once).  ``changes``: every record read from the change topic, in
    topic order.  ``history_by_user``: every stored version (e.g. :func:`read_store`).
    Optional ``current_by_user`` / ``applied_by_user`` only produce warnings.
    """
    report = LedgerReport()
    problems = report.problems
    warnings = report.warnings
    produced = {u: set(ids) for u, ids in produced_event_ids_by_user.items()}
    owner: dict[str, str] = {}
    for u, ids in produced.items():
        for eid in ids:
            if eid in owner and owner[eid] != u:
                raise ValueError(f"event id {eid} produced for two users ({owner[eid]}, {u})")
            owner[eid] = u
    report.users = len(produced)
    report.events_checked = sum(len(ids) for ids in produced.values())

    # ---- stored versions: contiguous, chained, every produced event exactly once ------------
    stored: dict[tuple[str, int], SummaryRecord] = {}
    applied_in: dict[tuple[str, str], list[int]] = defaultdict(list)
    for user in sorted(set(produced) | set(history_by_user)):
        history = sorted(history_by_user.get(user, ()), key=lambda r: r.version)
        report.versions += len(history)
        if user not in produced and history:
            problems.append(f"{user}: {len(history)} stored version(s) for a user never produced")
        versions = [r.version for r in history]
        if versions != list(range(1, len(history) + 1)):
            problems.append(f"{user}: versions are {versions}, not contiguous 1..{len(history)}")
        for i, r in enumerate(history):
            stored[(user, r.version)] = r
            if r.user_id != user:
                problems.append(f"{user} v{r.version}: row has user_id {r.user_id!r}")
            want_prev = history[i - 1].version if i else None
            if r.previous_version != want_prev:
                problems.append(f"{user} v{r.version}: previous_version={r.previous_version}, "
                                f"expected {want_prev}")
            for eid in r.event_ids:
                applied_in[(user, eid)].append(r.version)
            if not set(r.dropped_event_ids) <= set(r.event_ids):
                problems.append(f"{user} v{r.version}: dropped ids not among its event ids: "
                                f"{sorted(set(r.dropped_event_ids) - set(r.event_ids))[:5]}")
            report.dropped_events += len(r.dropped_event_ids)
            if r.model == no_model:
                report.carried_forward_versions += 1
            elif not r.summary.strip() or "</think>" in r.summary or "<think>" in r.summary:
                problems.append(f"{user} v{r.version}: stored summary is model garbage: "
                                f"{r.summary[:120]!r}")
            if not r.event_ids:
                problems.append(f"{user} v{r.version}: a version with no events")
    for user, ids in sorted(produced.items()):
        missing = sorted(eid for eid in ids if not applied_in.get((user, eid)))
        if missing:
            problems.append(f"{user}: {len(missing)} produced event(s) in no stored version, "
                            f"e.g. {missing[:5]}")
    for (user, eid), versions in sorted(applied_in.items()):
        if len(versions) > 1:
            problems.append(f"{user}: event {eid} applied {len(versions)} times "
                            f"(versions {versions})")
        if eid not in produced.get(user, ()):
            where = f"it was produced for {owner[eid]}" if eid in owner else "never produced"
            problems.append(f"{user} v{versions[0]}: stored event {eid} ({where})")

    # ---- change events: one distinct per stored version, equal to it -------------------------
    changes = list(changes)
    report.change_events = len(changes)
    by_id: dict[str, list[SummaryChanged]] = defaultdict(list)
    first_seen: list[SummaryChanged] = []
    for c in changes:
        if c.event_id not in by_id:
            first_seen.append(c)
        by_id[c.event_id].append(c)
    report.distinct_change_events = len(by_id)
    report.duplicate_change_copies = len(changes) - len(by_id)
    per_version: dict[tuple[str, int], list[str]] = defaultdict(list)
    for eid, copies in by_id.items():
        first = copies[0]
        for other in copies[1:]:
            # a copy republished from the store carries the store's precision (created_at in ms)
            diffs = _diff_copies(first, other)
            if diffs:
                problems.append(f"change event {eid} ({first.user_id} v{first.version}): copies "
                                "differ: " + "; ".join(diffs))
                break
        per_version[(first.user_id, first.version)].append(eid)
        if eid != change_event_id(first.user_id, first.version):
            problems.append(f"change event {eid} ({first.user_id} v{first.version}): not the "
                            f"deterministic id {change_event_id(first.user_id, first.version)}")
    for key, eids in sorted(per_version.items()):
        user, version = key
        if len(eids) > 1:
            problems.append(f"{user} v{version}: {len(eids)} DISTINCT change events {eids[:3]}")
        record = stored.get(key)
        if record is None:
            problems.append(f"{user} v{version}: change event {eids[0]} for a version that is "
                            "not stored")
            continue
        diffs = _diff_change(by_id[eids[0]][0], record)
        if diffs:
            problems.append(f"{user} v{version}: change event differs from the stored version: "
                            + "; ".join(diffs))
    for key in sorted(set(stored) - set(per_version)):
        problems.append(f"{key[0]} v{key[1]}: stored but no change event announced it")

    # ---- warnings: not asserted here ---------------------------------------------------------
    order: dict[str, list[int]] = defaultdict(list)
    for c in first_seen:
        order[c.user_id].append(c.version)
    for user, vs in sorted(order.items()):
        if vs != sorted(vs):
            warnings.append(f"{user}: first copies of change events out of version order: {vs}")
    if current_by_user is not None:
        for user in sorted(u for u in history_by_user if history_by_user[u]):
            last = max(r.version for r in history_by_user[user])
            cur = current_by_user.get(user)
            if cur is None or cur.version != last:
                warnings.append(f"{user}: current version served at "
                                f"{cur.version if cur else None}, history at v{last}")
    if applied_by_user is not None:
        for (user, eid), versions in sorted(applied_in.items()):
            got = applied_by_user.get(user, {}).get(eid)
            if got != versions[0]:
                warnings.append(f"{user}: dedupe index[{eid}] = {got}, stored in v{versions[0]} "
                                "(a late duplicate of it would not be recognised)")

    if problems and raise_on_problems:
        raise LedgerError(problems, report)
    return report


# ---------------------------------------------------------------------------------------------
# Reading the store
# ---------------------------------------------------------------------------------------------


@dataclass
class StoreSnapshot:
    history: dict[str, list[SummaryRecord]]
    current: dict[str, SummaryRecord]
    applied: dict[str, dict[str, int]]  # user -> event id -> version

    @property
    def versions(self) -> int:
        return sum(len(v) for v in self.history.values())


def _record(row) -> SummaryRecord:
    created = row.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return SummaryRecord(
        user_id=row.user_id, version=row.version, previous_version=row.previous_version,
        summary=row.summary or "", model=row.model or "", window_id=row.window_id or "",
        event_ids=tuple(row.event_ids or ()), dropped_event_ids=tuple(row.dropped_event_ids or ()),
        usage=TokenUsage(prompt_tokens=row.prompt_tokens or 0,
                         completion_tokens=row.completion_tokens or 0),
        latency_ms=row.latency_ms or 0.0, created_at=created,
    )


def read_store(port: int, keyspace: str, *, host: str = "127.0.0.1",
               timeout_s: float = 30.0) -> StoreSnapshot:
    """Every version row and dedupe index row of a keyspace's ``profile_log``, and the version
    the read path serves as current per user (full scans at QUORUM: meant for test-sized
    keyspaces).  Blocking: call via ``to_thread``."""
    from cassandra import ConsistencyLevel
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy

    profile = ExecutionProfile(
        load_balancing_policy=DCAwareRoundRobinPolicy(local_dc="datacenter1"),
        request_timeout=timeout_s, consistency_level=ConsistencyLevel.QUORUM)
    cluster = Cluster([host], port=port, protocol_version=5, connect_timeout=timeout_s,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    try:
        session = cluster.connect()
        history: dict[str, list[SummaryRecord]] = defaultdict(list)
        versions = f"FROM {keyspace}.profile_log WHERE kind = 'v'"
        for row in session.execute(f"SELECT {_COLUMNS} {versions} ALLOW FILTERING"):
            history[row.user_id].append(_record(row))
        for records in history.values():
            records.sort(key=lambda r: r.version)
        current = {row.user_id: _record(row) for row in session.execute(
            f"SELECT {_COLUMNS} {versions} PER PARTITION LIMIT 1 ALLOW FILTERING")}
        applied: dict[str, dict[str, int]] = defaultdict(dict)
        for row in session.execute(f"SELECT user_id, key, version FROM {keyspace}.profile_log "
                                   "WHERE kind = 'e' ALLOW FILTERING"):
            applied[row.user_id][row.key] = row.version
        return StoreSnapshot(dict(history), current, dict(applied))
    finally:
        cluster.shutdown()


def read_history(port: int, keyspace: str, **kwargs) -> dict[str, list[SummaryRecord]]:
    """All stored versions of a keyspace, per user, oldest first."""
    return read_store(port, keyspace, **kwargs).history


def duplicates(ids: Iterable[str]) -> dict[str, int]:
    return {k: n for k, n in Counter(ids).items() if n > 1}
