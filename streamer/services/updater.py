"""The update service: one closed window in, one new summary version out.

Used unchanged by the Kafka worker, the replay command and backfill.  It only talks to ports.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from opentelemetry.trace import SpanKind

from schemas import (
    InputRange,
    Interaction,
    QualityScore,
    SummaryChanged,
    SummaryRecord,
    TokenUsage,
    WindowFacts,
    WindowTriple,
)

from ..domain.budget import FitResult, estimate_tokens, fit_prompt_async
from ..domain.catalog import Lookup, resolve
from ..domain.output import OutputRejected, parse_summary
from ..domain.prompt import NOT_PROVIDED, Prompt
from ..domain.triples import Triple, to_triples
from ..domain.windowing import window_id
from ..errors import StoreRegressedError, VersionConflictError
from ..ports import (
    ChangePublisher,
    ModelReply,
    ProfileStore,
    SummaryModel,
    TokenCounter,
    UpdateRequest,
)
from ..settings import ModelSettings, WindowSettings, default_of
from ..telemetry import Telemetry, WindowTrace
from .quality import QualityScorer

log = logging.getLogger(__name__)

NO_MODEL = "prefstream-carry-forward"
"""``model`` of a version made without a model call (the previous summary carried forward).
A first version of this kind holds ``Not Provided.``, the model's own no-summary placeholder."""


class Outcome(enum.StrEnum):
    """What happened to a window; one per update, used by logs and metrics."""

    UPDATED = "updated"
    DUPLICATE = "duplicate"  # every event was already applied (a replayed window)
    NO_TRIPLES = "no_triples"  # only unpaired dislikes: summary carried forward, events dropped
    TOO_LARGE = "too_large"  # not even one interaction fits: summary carried forward, dropped
    REJECTED_OUTPUT = "rejected_output"  # the model never gave a usable summary
    SUPPRESSED = "suppressed"  # the user was forgotten: the window is dropped, nothing stored


class _Forgotten(Exception):
    """The user was forgotten while its update ran: what it stored is deleted again."""


@dataclass(frozen=True, slots=True)
class UpdateResult:
    outcome: Outcome
    user_id: str
    record: SummaryRecord | None = None
    attempts: int = 0
    rejections: tuple[str, ...] = ()
    dropped_event_ids: tuple[str, ...] = field(default=())
    summary_too_long: bool = False
    reused_event_ids: tuple[str, ...] = ()  # applied before with other content: not applied


@dataclass(frozen=True, slots=True)
class UpdatePolicy:
    """Knobs of the update service: settings (their defaults are the settings' own) plus a few
    internal limits."""

    rating_threshold: float = default_of(WindowSettings, "rating_threshold")
    max_summary_chars: int = default_of(ModelSettings, "max_summary_chars")
    output_attempts: int = default_of(ModelSettings, "output_attempts")
    context_tokens: int = default_of(ModelSettings, "context_tokens")
    output_tokens: int = default_of(ModelSettings, "max_tokens")
    reasoning: Literal["required", "optional"] = default_of(ModelSettings, "reasoning")
    output_backoff_s: float = 0.5
    conflict_attempts: int = 5
    published_memory: int = 100_000  # users whose last published version is remembered

    @classmethod
    def from_settings(cls, window: WindowSettings, model: ModelSettings) -> UpdatePolicy:
        return cls(rating_threshold=window.rating_threshold,
                   max_summary_chars=model.max_summary_chars,
                   output_attempts=model.output_attempts, context_tokens=model.context_tokens,
                   output_tokens=model.max_tokens, reasoning=model.reasoning)



def _utcnow() -> datetime:
    return datetime.now(UTC)


class ProfileUpdater:
    """Applies windows of interactions to users' summaries."""

    def __init__(
        self,
        store: ProfileStore,
        model: SummaryModel,
        publisher: ChangePublisher,
        policy: UpdatePolicy | None = None,
        *,
        clock: Callable[[], datetime] = _utcnow,
        token_counter: TokenCounter | None = None,
        telemetry: Telemetry | None = None,
        scorer: QualityScorer | None = None,
        keep_triples: bool = False,
        input_topic: str = "",
        check_forgotten: bool = False,
        catalog: Lookup | None = None,
    ) -> None:
        self.telemetry = telemetry or Telemetry.noop()
        self.catalog = catalog  # fills in items named by id only (None: items are used as sent)
        self.input_topic = input_topic  # named in each version's window facts
        self.check_forgotten = check_forgotten and hasattr(store, "suppressed")
        self.scorer = scorer
        self.keep_triples = keep_triples
        self.token_counter = token_counter
        self.store = store
        self.model = model
        self.publisher = publisher
        self.policy = policy or UpdatePolicy()
        self.clock = clock
        self._published: dict[str, int] = {}  # highest version published per user (bounded LRU)

    async def apply(
        self, user_id: str, events: Sequence[Interaction], *, trace: WindowTrace | None = None,
        guard: Callable[[], None] | None = None, digests: Mapping[str, str] | None = None,
    ) -> UpdateResult:
        """Apply a closed window; retries version conflicts by reloading the current version.

        Raises transient errors (store or model unavailable) to the caller, which keeps the
        window's events for a later attempt.  ``trace`` (from the transport) gives the input
        records' trace contexts, linked from the ``update_window`` span, and Kafka timestamps.
        ``guard`` is called right before the version is stored and before it is published; it
        raises :class:`~streamer.errors.FencedError` when this worker lost the user's partition.
        """
        trace = trace or WindowTrace()
        self._guard = guard
        with self.telemetry.window_span(user_id, len(events), trace.links) as span:
            for _ in range(self.policy.conflict_attempts):
                try:
                    result = await self._apply_once(user_id, events, trace, guard, digests)
                except VersionConflictError:
                    log.info("version conflict for a user; reloading and retrying")
                    continue
                span.set_attribute("prefstream.outcome", result.outcome.value)
                if result.record is not None:
                    span.set_attribute("prefstream.version", result.record.version)
                log.info(
                    "window applied: user_id=%s outcome=%s events=%d version=%s",
                    user_id, result.outcome.value, len(events),
                    result.record.version if result.record else None,
                    extra={"linked_trace_ids": [format(sc.trace_id, "032x") for sc in trace.links]},
                )
                return result
            raise VersionConflictError(
                f"gave up after {self.policy.conflict_attempts} version conflicts"
            )

    async def _apply_once(
        self, user_id: str, events: Sequence[Interaction], trace: WindowTrace,
        guard: Callable[[], None] | None = None, digests: Mapping[str, str] | None = None,
    ) -> UpdateResult:
        reused: set[str] = set()
        if self.check_forgotten and await self.store.suppressed(user_id):  # type: ignore[attr-defined]
            log.info("window of a forgotten user dropped (%d events)", len(events))
            return UpdateResult(Outcome.SUPPRESSED, user_id, None)
        try:
            result = await self._apply_window(user_id, events, trace, guard, digests, reused)
        except _Forgotten:
            return UpdateResult(Outcome.SUPPRESSED, user_id, None)
        if reused:
            result = replace(result, reused_event_ids=tuple(sorted(reused)))
        return result

    async def _apply_window(
        self, user_id: str, events: Sequence[Interaction], trace: WindowTrace,
        guard: Callable[[], None] | None, digests: Mapping[str, str] | None, reused: set[str],
    ) -> UpdateResult:
        current = await self.store.get_current(user_id)
        self._check_regression(user_id, current)
        ids = [e.event_id for e in events]
        digests = digests or {}
        known = await self.store.applied_digests(user_id, ids)
        indexed = set(known)
        # an id applied before with other content: not a duplicate, and not applied either
        reused.update(i for i, d in known.items() if d and digests.get(i) and digests[i] != d)
        in_current = set(ids) & set(current.event_ids) if current else set()
        if current is not None and in_current - indexed:
            # a version stored without its dedupe-index rows (a store that writes them apart
            # from the version, or a version copied from an older schema): repair the index,
            # or a later duplicate (once a newer version exists) would be applied again
            await self.store.mark_applied(user_id, sorted(in_current - indexed), current.version,
                                          digests)
        applied = indexed | in_current
        fresh = [e for e in events if e.event_id not in applied]
        if current is not None and in_current:
            # Redelivered events of the latest version: the worker may have died after storing
            # it and before its change event was acknowledged, so publish it again (same
            # deterministic event id: consumers drop the copy).
            if guard is not None:
                guard()
            await self.publisher.publish(change_event(current, await self._summary_before(current)))
        if not fresh:
            return UpdateResult(Outcome.DUPLICATE, user_id, current)
        usable: Sequence[Interaction] = fresh
        unusable: tuple[str, ...] = ()
        unresolved: tuple[str, ...] = ()
        if self.catalog is not None:
            resolution = resolve(fresh, self.catalog)
            usable, unusable = resolution.events, resolution.unusable_event_ids
            unresolved = resolution.unresolved_item_ids
        conversion = to_triples(usable, rating_threshold=self.policy.rating_threshold)
        unpaired = (*unusable, *conversion.unpaired_event_ids)
        previous = current.summary if current else None
        if not conversion.triples:  # nothing to show the model: carry the summary forward
            record = await self._store(user_id, current, fresh, previous, NO_MODEL, None,
                                       dropped=unpaired, trace=trace, guard=guard,
                                       digests=digests, unresolved=unresolved)
            return UpdateResult(Outcome.NO_TRIPLES, user_id, record,
                                dropped_event_ids=record.dropped_event_ids)
        fit = await self._fit(previous, conversion.triples)
        if fit.summary_too_long:
            log.warning("previous summary exceeds its token allowance (truncated=%s)",
                        fit.summary_truncated)
        if not fit.fits:
            log.error("window does not fit the context even cut down (%d prompt tokens)",
                      fit.prompt_tokens)
            record = await self._store(user_id, current, fresh, previous, NO_MODEL, None,
                                       dropped=tuple(e.event_id for e in fresh), trace=trace,
                                       guard=guard, digests=digests, unresolved=unresolved)
            return UpdateResult(Outcome.TOO_LARGE, user_id, record,
                                dropped_event_ids=record.dropped_event_ids)
        request = UpdateRequest(prompt=fit.prompt, previous_summary=previous, triples=fit.kept,
                                user_id=user_id)
        # the previous summary is judged on this window while the model writes the next one
        scoring = (asyncio.create_task(self.scorer.score(current, conversion.triples))
                   if self.scorer is not None and current is not None else None)
        try:
            reply, summary, attempts, rejections = await self._generate(request)
        except BaseException:
            if scoring is not None:
                scoring.cancel()
            raise
        if summary is None:  # the scheduler retries the window, and parks it after a bound
            if scoring is not None:
                scoring.cancel()
            return UpdateResult(
                Outcome.REJECTED_OUTPUT, user_id, current, attempts=attempts, rejections=rejections
            )
        quality = await self._score_of(scoring)
        dropped = (*fit.dropped_event_ids, *unpaired)
        record = await self._store(user_id, current, fresh, summary, reply.model, reply,
                                   dropped=dropped, trace=trace, guard=guard, digests=digests,
                                   quality=quality, triples=fit.kept, unresolved=unresolved)
        return UpdateResult(Outcome.UPDATED, user_id, record, attempts, rejections,
                            dropped_event_ids=record.dropped_event_ids,
                            summary_too_long=fit.summary_too_long)

    async def _score_of(self, scoring: asyncio.Task[QualityScore | None] | None
                        ) -> QualityScore | None:
        """The quality score, waited for at most ``wait_s`` after the update call (it ran
        beside it); a score not ready by then is dropped: the version goes unscored."""
        if scoring is None or self.scorer is None:
            return None
        done, _ = await asyncio.wait({scoring}, timeout=self.scorer.policy.wait_s)
        if not done:
            scoring.cancel()
            self.scorer.late()
            return None
        return scoring.result()

    async def _store(
        self,
        user_id: str,
        current: SummaryRecord | None,
        events: Sequence[Interaction],
        summary: str | None,
        model: str,
        reply: ModelReply | None,
        *,
        dropped: Sequence[str],
        trace: WindowTrace | None = None,
        guard: Callable[[], None] | None = None,
        digests: Mapping[str, str] | None = None,
        quality: QualityScore | None = None,
        triples: Sequence[Triple] = (),
        unresolved: Sequence[str] = (),
    ) -> SummaryRecord:
        """Append the next version (raises VersionConflictError) and publish its change event.

        Every window ends in a version, so each valid event is recorded in exactly one; events
        the prompt could not show are listed in ``dropped_event_ids``, never silently lost.
        """
        record = SummaryRecord(
            user_id=user_id,
            version=current.version + 1 if current else 1,
            previous_version=current.version if current else None,
            summary=summary if summary is not None else NOT_PROVIDED,
            model=model,
            window_id=window_id(user_id, (e.event_id for e in events)),
            event_ids=tuple(e.event_id for e in events),
            dropped_event_ids=tuple(dict.fromkeys(dropped)),
            usage=TokenUsage(
                prompt_tokens=reply.prompt_tokens if reply else 0,
                completion_tokens=reply.completion_tokens if reply else 0,
            ),
            latency_ms=reply.latency_ms if reply else 0.0,
            created_at=_after(self.clock(), current.created_at if current else None),
            quality=quality,
            triples=tuple(WindowTriple(query=t.query, chosen=t.chosen, rejected=t.rejected)
                          for t in triples) if self.keep_triples else (),
            window=window_facts(events, trace, self.input_topic, unresolved),
        )
        if guard is not None:
            guard()
        with self.telemetry.span("store_append", attributes={"prefstream.version": record.version}):
            await self.store.append(record, digests)
        if self.check_forgotten and await self.store.suppressed(user_id):  # type: ignore[attr-defined]
            # forgotten while this update ran: delete what it stored, publish nothing
            await self.store.forget(user_id)  # type: ignore[attr-defined]
            log.warning("user forgotten during its update: the stored version was deleted")
            raise _Forgotten
        if unresolved:
            self.telemetry.record_unresolved_items(len(unresolved))
        self._published_version(record.user_id, record.version)
        if guard is not None:
            guard()
        with self.telemetry.span("publish_change", kind=SpanKind.PRODUCER):
            await self.publisher.publish(change_event(record, current.summary if current else None))
        self._record_freshness(events, trace)
        return record

    async def _summary_before(self, record: SummaryRecord) -> str | None:
        """The summary a stored version replaced (for a republished change event), or None."""
        if record.previous_version is None:
            return None
        page = getattr(self.store, "history_page", None)
        if page is None:
            return None
        older = await page(record.user_id, 1, before_version=record.version)
        return older[0].summary if older else None

    def _published_version(self, user_id: str, version: int) -> None:
        seen = self._published
        seen.pop(user_id, None)
        seen[user_id] = version
        while len(seen) > self.policy.published_memory:
            seen.pop(next(iter(seen)))

    def _check_regression(self, user_id: str, current: SummaryRecord | None) -> None:
        """Refuse to write under a version number already published when the store went
        backwards (acknowledged writes lost, e.g. a node without durable commits killed)."""
        published = self._published.get(user_id)
        latest = current.version if current else 0
        if published is not None and latest < published:
            self.telemetry.record_store_regression()
            log.error("store went backwards: user_id=%s latest stored version %d < published %d;"
                      " not writing until it catches up", user_id, latest, published)
            raise StoreRegressedError(
                f"latest stored version {latest} is below published version {published}")

    def _record_freshness(self, events: Sequence[Interaction], trace: WindowTrace | None) -> None:
        """Input record (Kafka timestamp, else occurred_at) to acknowledged change event."""
        times = trace.event_times if trace else {}
        now = time.time()
        for e in events:
            at = times.get(e.event_id)
            if at is None:
                at = e.occurred_at.timestamp()
            self.telemetry.record_freshness(now - at)

    async def _fit(self, previous: str | None, triples: Sequence[Triple]) -> FitResult:
        """Fit prompt + output allowance into the context, keeping the most recent triples.

        The conservative offline estimate is tried first: it over-counts, so when it fits the
        real prompt fits too and the server is not asked.  Only a window the estimate finds too
        large is measured with the server's tokenizer (when available).
        """
        policy = self.policy

        async def estimate(prompt: Prompt) -> int:
            return estimate_tokens(prompt.chat_text())

        fit = await fit_prompt_async(previous, triples, count=estimate,
                                     context_tokens=policy.context_tokens,
                                     output_tokens=policy.output_tokens)
        if self.token_counter is None or (fit.fits and not fit.dropped_event_ids
                                          and not fit.truncated_event_ids):
            return fit
        counter = self.token_counter

        async def exact(prompt: Prompt) -> int:
            n = await counter(prompt)
            return n if n is not None else estimate_tokens(prompt.chat_text())

        return await fit_prompt_async(previous, triples, count=exact,
                                      context_tokens=policy.context_tokens,
                                      output_tokens=policy.output_tokens)

    async def _generate(
        self, request: UpdateRequest
    ) -> tuple[ModelReply, str | None, int, tuple[str, ...]]:
        rejections: list[str] = []
        reply: ModelReply | None = None
        latency = 0.0
        for attempt in range(1, self.policy.output_attempts + 1):
            started = time.perf_counter()
            with self.telemetry.span("model_call", kind=SpanKind.CLIENT,
                                     attributes={"prefstream.attempt": attempt}) as span:
                try:
                    reply = await self.model.generate(request)
                except Exception:
                    self.telemetry.record_model_call(time.perf_counter() - started, prompt_tokens=0,
                                                     completion_tokens=0, ok=False)
                    raise
                span.set_attribute("gen_ai.usage.input_tokens", reply.prompt_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", reply.completion_tokens)
            self.telemetry.record_model_call(time.perf_counter() - started,
                                             prompt_tokens=reply.prompt_tokens,
                                             completion_tokens=reply.completion_tokens)
            latency += reply.latency_ms
            try:
                summary = parse_summary(
                    reply.text,
                    max_chars=self.policy.max_summary_chars,
                    finish_reason=reply.finish_reason,
                    reasoning=reply.reasoning,
                    thinking=self.policy.reasoning,
                )
            except OutputRejected as exc:
                rejections.append(exc.code)
                log.warning("model output rejected (%s), attempt %d", exc.code, attempt)
                if attempt < self.policy.output_attempts:
                    await asyncio.sleep(self.policy.output_backoff_s * 2 ** (attempt - 1))
                continue
            reply = replace(reply, latency_ms=latency)
            return reply, summary, attempt, tuple(rejections)
        assert reply is not None
        return reply, None, self.policy.output_attempts, tuple(rejections)


def _after(now: datetime, previous: datetime | None) -> datetime:
    """``now``, but at least 1 ms after the previous version (stored at ms precision): a user's
    versions have strictly increasing ``created_at`` (``as_of`` relies on it, and stores that keep
a current row apart order its writes by it)."""
    if previous is None:
        return now
    return max(now, previous + timedelta(milliseconds=1))


def window_facts(events: Sequence[Interaction], trace: WindowTrace | None,
                 topic: str, unresolved: Sequence[str] = ()) -> WindowFacts:
    """Event count and times of a version's events, their input offset ranges per partition
    (from the buffered records; none for input that did not come from Kafka), and the items
    the catalog could not resolve."""
    times = [e.occurred_at for e in events]
    by_partition: dict[int, list[int]] = {}
    offsets = trace.offsets if trace else {}
    for e in events:
        if e.event_id in offsets:
            partition, offset = offsets[e.event_id]
            by_partition.setdefault(partition, []).append(offset)
    return WindowFacts(
        events=len(events), first_event_at=min(times, default=None),
        last_event_at=max(times, default=None),
        inputs=tuple(InputRange(topic=topic, partition=p, first_offset=min(o), last_offset=max(o))
                     for p, o in sorted(by_partition.items())) if topic else (),
        unresolved_item_ids=tuple(unresolved),
    )


def change_event(record: SummaryRecord, previous_summary: str | None = None) -> SummaryChanged:
    """The change event announcing a stored version (its id is derived, so replays match);
    ``previous_summary`` is the summary it replaced."""
    return SummaryChanged(
        event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{record.user_id}/{record.version}")),
        user_id=record.user_id,
        version=record.version,
        previous_version=record.previous_version,
        summary=record.summary,
        model=record.model,
        window_id=record.window_id,
        event_ids=record.event_ids,
        dropped_event_ids=record.dropped_event_ids,
        usage=record.usage,
        latency_ms=record.latency_ms,
        occurred_at=record.created_at,
        quality=record.quality,
        previous_summary=previous_summary,
        window=record.window,
    )
