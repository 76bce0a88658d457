"""The stored quality score, read back: ``streamer quality`` and ``streamer export-training``.

Pure computation over :class:`~schemas.SummaryRecord` objects (the CLI scans the store with
``scan_history`` and feeds them in); nothing here does I/O except :func:`write_plots` (PNG
files, only when matplotlib, the optional ``bench`` extra, is installed).

Quality report
--------------
Only versions that carry a ``quality`` score count.  A score judges the PREVIOUS version's
summary (``quality.scored_version``) on this version's window.  Every accuracy is
pairs-weighted (sum of correct / sum of pairs) and every mean p_correct is the mean over the
judged pairs (each window's ``mean_p_correct`` weighted by its pairs).  The no-summary baseline
exists on a sample of scored windows only, so "with summary" and "without" are compared on the
SAME windows (those that carry ``no_summary``); the lift is their difference.

Tables: overall, accuracy over time (by the version's ``created_at``, UTC hour, day or ISO
week), against summary age (``<1m``, ``<1h``, ``<1d``, ``<1w``, ``>=1w`` of ``summary_age_s``),
against window size (judged pairs per window: ``1``, ``2-3``, ``4-7``, ``8+``) and the judge's
cost (calls and tokens, in total and per scored window).

Training records (``streamer export-training OUT.jsonl``)
---------------------------------------------------------
One JSON object per line for every version that has a previous version (``previous_version``
not None), its window's triples stored (``STREAMER_QUALITY__KEEP_TRIPLES``) and is not a
rollback (a restored summary, no model call)::

    {"user_id": "u1",
     "version": 5,
     "previous_version": 4,
     "previous_summary": "<version 4's summary: the summary the model was given>",
     "triples": [{"query": "...", "chosen": "...", "rejected": "..."}, ...],
     "score": {...} | null,
     "summary": "<version 5's summary: what the model wrote from previous_summary + triples>",
     "next_score": {...} | null,
     "model": "<the model that wrote `summary`>",
     "created_at": "2026-06-01T12:00:00Z"}

``triples`` is the window exactly as the summarizer saw it (the prompt's kept triples; a
``rejected`` of ``No negative sample.`` is a positive-only signal, no pair).

``score`` is this version's own ``quality`` (a :class:`~schemas.QualityScore` as JSON, or null
when the window was not scored): it judges ``previous_summary`` on THIS line's ``triples``.  It
is the reward of the *input* summary, not of ``summary``.

``next_score`` is the NEXT version's ``quality`` (null when there is no next version yet, it
was not scored, or it scored another version): it judges ``summary`` on the next window, i.e.
on the user's choices that came after ``summary`` was written.  For RLPF/GRPO-style tuning of
a summarizer (the AlignXplore+ reward: the judge's probability of the user's actual next
choice given the summary), a line is (state = ``previous_summary`` + ``triples``, action =
``summary``, reward = ``next_score.summary.mean_p_correct``, or ``next_score.summary.accuracy``;
``next_score.no_summary``, where sampled, is the judge's prior without any summary).
``score`` gives the same judgement for the input summary, e.g. to train on improvements
(``next_score`` minus ``score``).

Filters: users (ids, a prefix), ``created_at`` range (of the line's own version), scored only
(``score`` not null), a minimum of pairs in the line's ``triples``.  Versions that cannot make
a line are counted by reason (:class:`ExportStats`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from schemas import QualityScore, SummaryRecord

from ..domain.judge import AGE_BUCKETS, age_bucket
from ..domain.triples import NO_NEGATIVE
from ..services.rollback import ROLLBACK_MODEL

Bucket = Literal["hour", "day", "week"]
BUCKETS: tuple[Bucket, ...] = ("hour", "day", "week")

"""(exclusive upper bound in seconds, label); the same labels as the live quality metrics."""

SIZE_BUCKETS: tuple[tuple[int, str], ...] = ((1, "1"), (3, "2-3"), (7, "4-7"), (2**63, "8+"))
"""(inclusive upper bound of judged pairs per window, label)."""

MATPLOTLIB_MISSING = ("no plots: matplotlib is not installed (it is in the optional `bench` "
                      "extra: pip install -e '.[bench]')")
NO_TRIPLES_HINT = "no triples kept: set STREAMER_QUALITY__KEEP_TRIPLES=true"


# --- the cohort ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cohort:
    """Which versions count.  Users: any of ``users`` (when given) and the ``user_prefix``
    (when given); ``model``: the summarizer that wrote the version (``record.model``);
    ``judge``: the judge of its score (a version without a score does not match);
    ``since`` <= ``created_at`` < ``until`` (aware datetimes)."""

    users: frozenset[str] = frozenset()
    user_prefix: str | None = None
    model: str | None = None
    judge: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def admits_user(self, user_id: str) -> bool:
        if self.users and user_id not in self.users:
            return False
        return not self.user_prefix or user_id.startswith(self.user_prefix)

    def admits_time(self, when: datetime) -> bool:
        return (self.since is None or when >= self.since) and \
            (self.until is None or when < self.until)

    def admits(self, record: SummaryRecord) -> bool:
        if not self.admits_user(record.user_id) or not self.admits_time(record.created_at):
            return False
        if self.model is not None and record.model != self.model:
            return False
        return self.judge is None or (record.quality is not None
                                      and record.quality.judge == self.judge)

    def describe(self) -> dict[str, Any]:
        """The filters that are set, as JSON."""
        out: dict[str, Any] = {}
        if self.users:
            out["users"] = sorted(self.users)
        for name in ("user_prefix", "model", "judge"):
            if (value := getattr(self, name)) is not None:
                out[name] = value
        for name in ("since", "until"):
            if (value := getattr(self, name)) is not None:
                out[name] = value.isoformat()
        return out


# --- the report ----------------------------------------------------------------------------


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


@dataclass
class Tally:
    """Scored windows of one table row, summed (see the module docstring for the weighting)."""

    label: str
    start: datetime | None = None
    windows: int = 0
    pairs: int = 0
    correct: int = 0
    p_sum: float = 0.0  # sum of mean_p_correct * pairs: the sum over judged pairs
    baseline_windows: int = 0  # windows that also carry the no-summary baseline
    baseline_pairs: int = 0
    baseline_pairs_with: int = 0
    baseline_correct_with: int = 0  # with the summary, on those windows
    baseline_correct_without: int = 0  # with an empty summary, on those windows
    judge_calls: int = 0
    judge_prompt_tokens: int = 0
    judge_completion_tokens: int = 0

    def add(self, q: QualityScore) -> None:
        self.windows += 1
        self.pairs += q.summary.pairs
        self.correct += q.summary.correct
        self.p_sum += q.summary.mean_p_correct * q.summary.pairs
        if q.no_summary is not None:
            self.baseline_windows += 1
            self.baseline_pairs += q.no_summary.pairs
            self.baseline_pairs_with += q.summary.pairs  # the same pairs, counted apart
            self.baseline_correct_with += q.summary.correct
            self.baseline_correct_without += q.no_summary.correct
        self.judge_calls += q.judge_calls
        self.judge_prompt_tokens += q.judge_prompt_tokens
        self.judge_completion_tokens += q.judge_completion_tokens

    @property
    def accuracy(self) -> float | None:
        return _ratio(self.correct, self.pairs)

    @property
    def mean_p_correct(self) -> float | None:
        return _ratio(self.p_sum, self.pairs)

    @property
    def with_summary_on_baseline(self) -> float | None:
        return _ratio(self.baseline_correct_with, self.baseline_pairs_with)

    @property
    def without_summary(self) -> float | None:
        return _ratio(self.baseline_correct_without, self.baseline_pairs)

    @property
    def lift(self) -> float | None:
        w, wo = self.with_summary_on_baseline, self.without_summary
        return None if w is None or wo is None else w - wo

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label}
        if self.start is not None:
            out["start"] = self.start.isoformat()
        return out | {
            "windows": self.windows, "pairs": self.pairs, "correct": self.correct,
            "accuracy": self.accuracy, "mean_p_correct": self.mean_p_correct,
            "baseline_windows": self.baseline_windows, "baseline_pairs": self.baseline_pairs,
            "accuracy_with_summary": self.with_summary_on_baseline,
            "accuracy_without_summary": self.without_summary, "lift": self.lift,
        }


def bucket_start(when: datetime, bucket: Bucket) -> datetime:
    """The UTC start of ``when``'s hour, day or ISO week (Monday)."""
    t = when.astimezone(UTC)
    if bucket == "hour":
        return t.replace(minute=0, second=0, microsecond=0)
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if bucket == "day":
        return day
    if bucket == "week":
        return day - timedelta(days=day.weekday())
    raise ValueError(f"bucket must be one of {BUCKETS}, not {bucket!r}")


def bucket_label(start: datetime, bucket: Bucket) -> str:
    if bucket == "hour":
        return start.strftime("%Y-%m-%dT%H:00Z")
    if bucket == "day":
        return start.strftime("%Y-%m-%d")
    year, week, _ = start.isocalendar()
    return f"{year}-W{week:02d}"


def size_bucket(pairs: int) -> str:
    for bound, label in SIZE_BUCKETS:
        if pairs <= bound:
            return label
    return SIZE_BUCKETS[-1][1]


@dataclass
class QualityReport:
    """The aggregate of a cohort's scored versions; feed it with :meth:`add`."""

    cohort: Cohort = field(default_factory=Cohort)
    bucket: Bucket = "day"
    versions: int = 0  # versions scanned
    in_cohort: int = 0  # of them, in the cohort (scored or not)
    overall: Tally = field(default_factory=lambda: Tally("all"))
    over_time: dict[datetime, Tally] = field(default_factory=dict)
    by_age: dict[str, Tally] = field(
        default_factory=lambda: {label: Tally(label) for _, label in AGE_BUCKETS})
    by_size: dict[str, Tally] = field(
        default_factory=lambda: {label: Tally(label) for _, label in SIZE_BUCKETS})

    def __post_init__(self) -> None:
        if self.bucket not in BUCKETS:
            raise ValueError(f"bucket must be one of {BUCKETS}, not {self.bucket!r}")

    def add(self, record: SummaryRecord) -> None:
        self.versions += 1
        if not self.cohort.admits(record):
            return
        self.in_cohort += 1
        q = record.quality
        if q is None:
            return
        start = bucket_start(record.created_at, self.bucket)
        if start not in self.over_time:
            self.over_time[start] = Tally(bucket_label(start, self.bucket), start=start)
        for tally in (self.overall, self.over_time[start], self.by_age[age_bucket(q.summary_age_s)],
                      self.by_size[size_bucket(q.summary.pairs)]):
            tally.add(q)

    @property
    def scored(self) -> int:
        return self.overall.windows

    def time_rows(self) -> list[Tally]:
        return [self.over_time[k] for k in sorted(self.over_time)]

    def cost(self) -> dict[str, Any]:
        o = self.overall
        rows = {"judge_calls": o.judge_calls, "judge_prompt_tokens": o.judge_prompt_tokens,
                "judge_completion_tokens": o.judge_completion_tokens}
        return {"total": rows, "per_window": {k: _ratio(v, o.windows) for k, v in rows.items()}}

    def as_dict(self) -> dict[str, Any]:
        return {
            "cohort": self.cohort.describe(), "versions_scanned": self.versions,
            "versions_in_cohort": self.in_cohort, "scored_windows": self.scored,
            "overall": self.overall.as_dict(),
            "over_time": {"bucket": self.bucket, "rows": [t.as_dict() for t in self.time_rows()]},
            "by_summary_age": [t.as_dict() for t in self.by_age.values()],
            "by_window_size": [t.as_dict() for t in self.by_size.values()],
            "judge_cost": self.cost(),
        }


def quality_report(records: Iterable[SummaryRecord], cohort: Cohort | None = None,
                   bucket: Bucket = "day") -> QualityReport:
    report = QualityReport(cohort=cohort or Cohort(), bucket=bucket)
    for record in records:
        report.add(record)
    return report


# --- text ----------------------------------------------------------------------------------


def _num(value: float | int | None, digits: int = 3, signed: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Aligned text: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]


_HEADERS = ("", "windows", "pairs", "accuracy", "p_correct", "baseline windows",
            "with summary", "without", "lift")


def _row(t: Tally) -> list[str]:
    return [t.label, _num(t.windows), _num(t.pairs), _num(t.accuracy), _num(t.mean_p_correct),
            _num(t.baseline_windows), _num(t.with_summary_on_baseline),
            _num(t.without_summary), _num(t.lift, signed=True)]


def format_report(report: QualityReport) -> str:
    cohort = ", ".join(f"{k}={v}" for k, v in report.cohort.describe().items()) or "all versions"
    o = report.overall
    lines = [f"quality of {report.scored} scored windows ({report.in_cohort} versions in the "
             f"cohort, {report.versions} scanned; cohort: {cohort})",
             "accuracy = correct / pairs over all judged pairs; 'with summary' vs 'without' on "
             "the same windows (those that carry the no-summary baseline)", ""]
    lines += ["overall"] + table(_HEADERS, [_row(o)]) + [""]
    if o.baseline_windows:
        lines += [f"lift of the summary: {_num(o.lift, signed=True)} accuracy "
                  f"({_num(o.with_summary_on_baseline)} with vs {_num(o.without_summary)} without, "
                  f"{o.baseline_windows} window(s), {o.baseline_pairs} pairs)", ""]
    else:
        lines += ["lift of the summary: no window carries the no-summary baseline "
                  "(STREAMER_QUALITY__BASELINE_RATE)", ""]
    lines += [f"accuracy over time (by {report.bucket}, UTC)"] + \
        table(_HEADERS, [_row(t) for t in report.time_rows()]) + [""]
    lines += ["accuracy against summary age"] + \
        table(_HEADERS, [_row(t) for t in report.by_age.values()]) + [""]
    lines += ["accuracy against window size (judged pairs per window)"] + \
        table(_HEADERS, [_row(t) for t in report.by_size.values()]) + [""]
    cost = report.cost()
    lines += ["judge cost"] + table(("", "total", "per window"), [
        [name.removeprefix("judge_").replace("_", " "), _num(cost["total"][name]),
         _num(cost["per_window"][name], 1)] for name in cost["total"]])
    return "\n".join(lines)


# --- plots ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlotSeries:
    """One plot: x labels and named lines (None where a bucket has no data)."""

    name: str  # file stem
    title: str
    xlabel: str
    x: tuple[str, ...]
    lines: dict[str, tuple[float | None, ...]]


def plot_series(report: QualityReport) -> list[PlotSeries]:
    """The data of the three plots (pure: :func:`write_plots` only draws it)."""
    time_rows = report.time_rows()
    return [
        PlotSeries("quality-over-time", "accuracy over time", f"{report.bucket} (UTC)",
                   tuple(t.label for t in time_rows),
                   {"with summary": tuple(t.accuracy for t in time_rows),
                    "no summary (baseline windows)": tuple(t.without_summary for t in time_rows)}),
        PlotSeries("quality-by-age", "accuracy against summary age", "summary age",
                   tuple(report.by_age), {"with summary": tuple(
                       t.accuracy for t in report.by_age.values())}),
        PlotSeries("quality-by-window-size", "accuracy against window size",
                   "judged pairs per window", tuple(report.by_size), {"with summary": tuple(
                       t.accuracy for t in report.by_size.values())}),
    ]


def write_plots(report: QualityReport, out: Path) -> list[Path] | None:
    """PNG files of :func:`plot_series` in ``out``; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for series in plot_series(report):
        fig, ax = plt.subplots(figsize=(7, 4))
        xs = range(len(series.x))
        for i, (label, ys) in enumerate(series.lines.items()):
            ax.plot(xs, [math.nan if y is None else y for y in ys], marker="o",
                    linestyle="-" if i == 0 else "--", label=label)
        ax.set_xticks(list(xs), list(series.x), rotation=45 if len(series.x) > 6 else 0,
                      ha="right" if len(series.x) > 6 else "center")
        ax.set_ylim(0, 1)
        ax.set_xlabel(series.xlabel)
        ax.set_ylabel("accuracy")
        ax.set_title(series.title)
        ax.legend()
        path = out / f"{series.name}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        made.append(path)
    return made


# --- training records ----------------------------------------------------------------------


def window_pairs(record: SummaryRecord) -> int:
    """Pairwise choices in the record's stored triples (positive-only ones are no pair)."""
    return sum(t.rejected != NO_NEGATIVE for t in record.triples)


@dataclass
class ExportStats:
    """What became of the cohort's versions (first versions are not counted: no line)."""

    written: int = 0
    no_triples: int = 0  # STREAMER_QUALITY__KEEP_TRIPLES was off (or the window was empty)
    rollback: int = 0  # a restored summary: no model call, no window
    unscored: int = 0  # --scored-only
    too_few_pairs: int = 0  # --min-pairs
    missing_previous: int = 0  # the previous version is not in the store

    def skipped(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if k != "written" and v}


def _score(q: QualityScore | None) -> dict[str, Any] | None:
    return q.model_dump(mode="json") if q is not None else None


def training_records(records: Iterable[SummaryRecord], cohort: Cohort | None = None, *,
                     scored_only: bool = False, min_pairs: int = 0,
                     stats: ExportStats | None = None) -> Iterator[dict[str, Any]]:
    """The training lines of ``records`` (any order: grouped by user, sorted by version), by
    user then version; see the module docstring.  ``cohort`` selects users and the line's
    ``created_at`` (its model and judge filters, if set, apply to the line's version too);
    previous and next versions are looked up whatever their time.  ``stats`` (if given) counts
    what was written and skipped."""
    cohort = cohort or Cohort()
    stats = stats if stats is not None else ExportStats()
    by_user: dict[str, dict[int, SummaryRecord]] = defaultdict(dict)
    for record in records:
        if cohort.admits_user(record.user_id):
            by_user[record.user_id][record.version] = record
    for user_id in sorted(by_user):
        versions = by_user[user_id]
        after = {r.previous_version: r for r in versions.values() if r.previous_version}
        for version in sorted(versions):
            record = versions[version]
            if record.previous_version is None or not cohort.admits(record):
                continue
            previous = versions.get(record.previous_version)
            if record.model == ROLLBACK_MODEL:
                stats.rollback += 1
            elif not record.triples:
                stats.no_triples += 1
            elif scored_only and record.quality is None:
                stats.unscored += 1
            elif window_pairs(record) < min_pairs:
                stats.too_few_pairs += 1
            elif previous is None:
                stats.missing_previous += 1
            else:
                nxt = after.get(record.version)
                next_score = nxt.quality if nxt is not None and nxt.quality is not None and \
                    nxt.quality.scored_version == record.version else None
                stats.written += 1
                yield {
                    "user_id": record.user_id, "version": record.version,
                    "previous_version": record.previous_version,
                    "previous_summary": previous.summary,
                    "triples": [t.model_dump(mode="json") for t in record.triples],
                    "score": _score(record.quality), "summary": record.summary,
                    "next_score": _score(next_score), "model": record.model,
                    "created_at": record.model_dump(mode="json")["created_at"],
                }
