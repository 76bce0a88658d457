"""`streamer eval`: the AlignXplore+ evaluation protocol, end to end.

1. Two-stage streaming summaries of each user's history through the update engine (the same
   prompts, parsing and versioning as the worker; stage 2 gets stage 1's summary as its past).
2. The pairwise downstream judgement of the held-out target (§6 of the reference): same prompt,
   random A/B order (seed 42), same parsing; accuracy, and AUC from the judge's letter
   probabilities when the endpoint returns logprobs.

Input is the benchmark format: one JSON object per line with ``userid``, ``history`` (a list of
``{query, chosen, rejected}``) and ``target``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from schemas import Item, PairwiseChoice

from ..domain.judge import JudgeItem
from ..domain.triples import NO_NEGATIVE, to_triples
from ..ports import Judge
from ..services.updater import Outcome, ProfileUpdater
from .judge import roc_auc, stage_chunks

log = logging.getLogger(__name__)

BUNDLED_SYNTHETIC = Path(__file__).parent / "data" / "eval_synthetic.jsonl"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class BenchmarkRecord:
    userid: str
    history: list[dict[str, Any]]
    target: dict[str, Any]


@dataclass
class EvalReport:
    engine: str
    judge: str
    dataset: str
    users: int = 0
    skipped_users: int = 0
    correct: int = 0
    unparsed: int = 0
    failed_summaries: int = 0
    accuracy: float = 0.0
    auc: float | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)

    def headline(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "rows"}


def load_benchmark(path: Path) -> list[BenchmarkRecord]:
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            doc = json.loads(line)
            out.append(BenchmarkRecord(str(doc["userid"]), doc["history"], doc["target"]))
    return out


def _events(user_id: str, triples: Sequence[dict[str, Any]], start: int) -> list[PairwiseChoice]:
    """Benchmark triples as pairwise events (generic domain: the text is rendered verbatim)."""
    events = []
    for i, t in enumerate(triples, start=start):
        rejected = t.get("rejected")
        events.append(
            PairwiseChoice(
                event_id=f"{user_id}-{i}",
                user_id=user_id,
                occurred_at=T0 + timedelta(minutes=i),
                domain="generic",
                query=t.get("query") or None,
                chosen=Item(id=f"{i}c", text=str(t["chosen"])),
                rejected=None
                if rejected in (None, NO_NEGATIVE)
                else Item(id=f"{i}r", text=str(rejected)),
            )
        )
    return events


async def streaming_summary(
    updater: ProfileUpdater, record: BenchmarkRecord, dataset: str
) -> str | None:
    """Stage 1 then stage 2 through the update engine; the final summary (None on failure)."""
    first, second = stage_chunks(record.history, dataset)
    summary = None
    start = 0
    for chunk in (first, second):
        if not chunk:
            continue
        result = await updater.apply(record.userid, _events(record.userid, chunk, start))
        start += len(chunk)
        if result.outcome is Outcome.REJECTED_OUTPUT:
            return None
        summary = result.record.summary if result.record else summary
    return summary


class Evaluation:
    """One evaluation run: each summarizer (an update service on its own in-memory store, built
    by ``streamer.app.build_eval``) against the same judge."""

    def __init__(self, updaters: Sequence[ProfileUpdater], *, judge: Judge) -> None:
        self.updaters = list(updaters)
        self.judge = judge

    async def run(self, records: Sequence[BenchmarkRecord], *, dataset: str,
                  seed: int = 42) -> list[EvalReport]:
        reports = []
        for updater in self.updaters:
            try:
                reports.append(await evaluate(records, updater=updater, judge=self.judge,
                                              dataset=dataset, seed=seed))
            finally:
                await updater.model.aclose()
        close = getattr(self.judge, "aclose", None)
        if close is not None:
            await close()
        return reports


async def evaluate(
    records: Sequence[BenchmarkRecord],
    *,
    updater: ProfileUpdater,
    judge: Judge,
    dataset: str,
    seed: int = 42,
    concurrency: int = 8,
) -> EvalReport:
    """Each record's streaming summary, then the judge's pairwise choice (the same judge as the
    live quality score: :mod:`streamer.domain.judge`)."""
    report = EvalReport(engine=updater.model.name, judge=judge.name, dataset=dataset)
    rng = random.Random(seed)
    orders = [rng.randint(0, 1) == 1 for _ in records]  # drawn up front: order-independent
    gate = asyncio.Semaphore(concurrency)
    labels: list[bool] = []
    scores: list[float] = []

    async def one(record: BenchmarkRecord, chosen_is_a: bool) -> dict[str, Any] | None:
        if not record.history:
            return None
        async with gate:
            summary = await streaming_summary(updater, record, dataset)
            if summary is None:
                return {"userid": record.userid, "failed_summary": True}
            item = JudgeItem(
                query=record.target.get("query") or "",
                summary=summary,
                chosen=str(record.target["chosen"]),
                rejected=str(record.target["rejected"]),
                chosen_is_a=chosen_is_a,
            )
            verdict = await judge.judge(item)
        return {"userid": record.userid, "gold": item.gold, "selection": verdict.selection,
                "p_a": 0.5 if verdict.p_a is None else verdict.p_a, "chosen_is_a": chosen_is_a,
                "summary": summary}

    rows = await asyncio.gather(*(one(r, o) for r, o in zip(records, orders, strict=True)))
    for row in rows:
        if row is None:
            report.skipped_users += 1
            continue
        if row.get("failed_summary"):
            report.failed_summaries += 1
            continue
        report.users += 1
        report.correct += row["selection"] == row["gold"]
        report.unparsed += row["selection"] is None
        labels.append(row["chosen_is_a"])
        scores.append(row["p_a"])
        report.rows.append(row)
    counted = report.users + report.failed_summaries
    report.accuracy = report.correct / counted if counted else 0.0
    report.auc = roc_auc(labels, scores)
    return report


def synthetic_benchmark(n_users: int = 30, seed: int = 13) -> list[dict[str, Any]]:
    """A small benchmark-format set from the synthetic clickstream (for CI, not for claims):
    history = the user's triples in order, target = the last triple with a real negative."""
    from schemas import INTERACTION_ADAPTER

    from ..devtools.synthetic import generate_events

    per_user: dict[str, list[Any]] = {}
    for doc in generate_events(n_users, (14, 20), seed=seed):
        event = INTERACTION_ADAPTER.validate_python(doc)
        per_user.setdefault(event.user_id, []).append(event)
    out = []
    for user_id, events in per_user.items():
        triples = [
            {"query": t.query, "chosen": t.chosen, "rejected": t.rejected}
            for e in events
            for t in to_triples([e]).triples
        ]
        targets = [i for i, t in enumerate(triples) if t["rejected"] != NO_NEGATIVE]
        if len(triples) < 4 or not targets:
            continue
        k = targets[-1]
        if k < 4:
            continue
        out.append({"userid": user_id, "history": triples[:k], "target": triples[k]})
    return out
