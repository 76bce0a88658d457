"""The quality report and the training export over hand-built summary versions: the
pairs-weighted math, the same-window lift, buckets, cohort filters, plots, and the pairing of a
version with its previous summary and the next version's score."""

from __future__ import annotations

import json
import math
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas import JudgedPairs, QualityScore, SummaryRecord, TokenUsage, WindowTriple
from streamer.domain.triples import NO_NEGATIVE
from streamer.evaluation.quality_report import (
    MATPLOTLIB_MISSING,
    Cohort,
    ExportStats,
    QualityReport,
    age_bucket,
    bucket_label,
    bucket_start,
    format_report,
    plot_series,
    quality_report,
    size_bucket,
    table,
    training_records,
    window_pairs,
    write_plots,
)
from streamer.services.rollback import ROLLBACK_MODEL

pytestmark = pytest.mark.unit

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # a Monday


def pairs(n: int, correct: int, p: float) -> JudgedPairs:
    return JudgedPairs(pairs=n, correct=correct, accuracy=correct / n, mean_p_correct=p)


def score(n: int = 4, correct: int = 3, p: float = 0.7, *, scored: int = 1, age: float = 30.0,
          judge: str = "judge-a", no_summary: tuple[int, float] | None = None, calls: int | None = None,
          prompt: int = 400, completion: int = 24) -> QualityScore:
    base = pairs(n, no_summary[0], no_summary[1]) if no_summary else None
    return QualityScore(judge=judge, scored_version=scored, summary_age_s=age,
                        summary=pairs(n, correct, p), no_summary=base,
                        judge_calls=calls if calls is not None else n * (2 if base else 1),
                        judge_prompt_tokens=prompt, judge_completion_tokens=completion)


def triple(i: int, rejected: str | None = None) -> WindowTriple:
    return WindowTriple(query=f"q{i}", chosen=f"liked {i}", rejected=rejected or f"disliked {i}")


def record(user: str, version: int, *, at: datetime = T0, quality: QualityScore | None = None,
           model: str = "alignxplore", triples: tuple[WindowTriple, ...] = (),
           summary: str | None = None) -> SummaryRecord:
    return SummaryRecord(
        user_id=user, version=version, previous_version=version - 1 or None,
        summary=summary or f"{user} summary v{version}", model=model, window_id=f"w{version}",
        event_ids=(f"{user}-e{version}",), usage=TokenUsage(prompt_tokens=10, completion_tokens=5),
        latency_ms=1.0, created_at=at, quality=quality, triples=triples)


# --- the report ----------------------------------------------------------------------------


def test_accuracy_and_p_correct_are_pairs_weighted_and_unscored_versions_do_not_count():
    report = quality_report([
        record("u1", 1),  # a first version: never scored
        record("u1", 2, quality=score(4, 3, 0.7)),
        record("u1", 3, quality=score(2, 0, 0.2, scored=2)),
        record("u2", 1),
    ])
    o = report.overall
    assert (report.versions, report.in_cohort, report.scored) == (4, 4, 2)
    assert (o.windows, o.pairs, o.correct) == (2, 6, 3)
    assert o.accuracy == 0.5  # 3/6, not the mean of 0.75 and 0.0
    assert math.isclose(o.mean_p_correct, (4 * 0.7 + 2 * 0.2) / 6)


def test_the_lift_compares_with_and_without_summary_on_the_same_windows():
    report = quality_report([
        record("u1", 2, quality=score(4, 3, 0.7, no_summary=(2, 0.5))),
        record("u1", 3, quality=score(2, 0, 0.2)),  # no baseline: not in the comparison
        record("u2", 2, quality=score(6, 6, 0.9, no_summary=(3, 0.5))),
    ])
    o = report.overall
    assert o.accuracy == 9 / 12
    assert (o.baseline_windows, o.baseline_pairs) == (2, 10)
    assert o.with_summary_on_baseline == 9 / 10
    assert o.without_summary == 5 / 10
    assert math.isclose(o.lift, 0.4)
    without = quality_report([record("u1", 2, quality=score())]).overall
    assert without.with_summary_on_baseline is None and without.lift is None


def test_time_buckets_are_utc_hours_days_and_iso_weeks():
    late = datetime(2026, 6, 3, 1, 30, tzinfo=timezone(timedelta(hours=2)))  # 2 June 23:30 UTC
    assert bucket_start(late, "hour") == datetime(2026, 6, 2, 23, tzinfo=UTC)
    assert bucket_start(late, "day") == datetime(2026, 6, 2, tzinfo=UTC)
    assert bucket_start(late, "week") == datetime(2026, 6, 1, tzinfo=UTC)  # the Monday
    assert bucket_label(bucket_start(late, "hour"), "hour") == "2026-06-02T23:00Z"
    assert bucket_label(bucket_start(late, "day"), "day") == "2026-06-02"
    assert bucket_label(bucket_start(late, "week"), "week") == "2026-W23"
    with pytest.raises(ValueError):
        bucket_start(late, "month")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        QualityReport(bucket="month")  # type: ignore[arg-type]


def test_accuracy_over_time_is_ordered_by_bucket():
    records = [record("u1", 4, at=T0 + timedelta(days=8), quality=score(2, 2, 1.0, scored=3)),
               record("u1", 2, at=T0, quality=score(4, 1, 0.3)),
               record("u1", 3, at=T0 + timedelta(hours=3), quality=score(4, 3, 0.6, scored=2))]
    days = quality_report(records, bucket="day").time_rows()
    assert [(t.label, t.windows, t.pairs, t.accuracy) for t in days] == [
        ("2026-06-01", 2, 8, 0.5), ("2026-06-09", 1, 2, 1.0)]
    hours = quality_report(records, bucket="hour").time_rows()
    assert [t.label for t in hours] == ["2026-06-01T12:00Z", "2026-06-01T15:00Z",
                                        "2026-06-09T12:00Z"]
    weeks = quality_report(records, bucket="week").time_rows()
    assert [(t.label, t.windows) for t in weeks] == [("2026-W23", 2), ("2026-W24", 1)]


def test_age_and_window_size_buckets():
    assert [age_bucket(s) for s in (0, 59.9, 60, 3599, 3600, 86399, 86400, 604799, 604800, 1e9)] \
        == ["<1m", "<1m", "<1h", "<1h", "<1d", "<1d", "<1w", "<1w", ">=1w", ">=1w"]
    assert [size_bucket(n) for n in (1, 2, 3, 4, 7, 8, 50)] == \
        ["1", "2-3", "2-3", "4-7", "4-7", "8+", "8+"]
    report = quality_report([
        record("u1", 2, quality=score(1, 1, 0.9, age=5)),
        record("u1", 3, quality=score(3, 1, 0.4, scored=2, age=7200)),
        record("u1", 4, quality=score(8, 4, 0.5, scored=3, age=8 * 86400)),
    ])
    assert {k: (t.windows, t.accuracy) for k, t in report.by_age.items()} == {
        "<1m": (1, 1.0), "<1h": (0, None), "<1d": (1, 1 / 3), "<1w": (0, None),
        ">=1w": (1, 0.5)}
    assert {k: (t.windows, t.pairs) for k, t in report.by_size.items()} == {
        "1": (1, 1), "2-3": (1, 3), "4-7": (0, 0), "8+": (1, 8)}


def test_judge_cost_in_total_and_per_scored_window():
    report = quality_report([
        record("u1", 1),
        record("u1", 2, quality=score(4, 3, 0.7, calls=4, prompt=400, completion=20)),
        record("u1", 3, quality=score(4, 3, 0.7, scored=2, no_summary=(2, 0.5), calls=8,
                                      prompt=700, completion=40)),
    ])
    assert report.cost() == {
        "total": {"judge_calls": 12, "judge_prompt_tokens": 1100, "judge_completion_tokens": 60},
        "per_window": {"judge_calls": 6.0, "judge_prompt_tokens": 550.0,
                       "judge_completion_tokens": 30.0}}


def test_cohort_filters_users_prefix_model_judge_and_time():
    records = [
        record("team-a", 2, at=T0, quality=score(judge="judge-a")),
        record("team-b", 2, at=T0 + timedelta(hours=1), quality=score(judge="judge-b"),
               model="other-model"),
        record("solo", 2, at=T0 + timedelta(hours=2), quality=score(judge="judge-a")),
        record("solo", 1, at=T0 - timedelta(hours=1)),
    ]

    def users(cohort: Cohort) -> list[str]:
        report = QualityReport(cohort=cohort)
        seen = []
        for r in records:
            before = report.scored
            report.add(r)
            if report.scored > before:
                seen.append(r.user_id)
        return seen

    assert users(Cohort()) == ["team-a", "team-b", "solo"]
    assert users(Cohort(users=frozenset({"solo", "team-b"}))) == ["team-b", "solo"]
    assert users(Cohort(user_prefix="team-")) == ["team-a", "team-b"]
    assert users(Cohort(users=frozenset({"solo", "team-b"}), user_prefix="team-")) == ["team-b"]
    assert users(Cohort(model="other-model")) == ["team-b"]
    assert users(Cohort(judge="judge-a")) == ["team-a", "solo"]
    # since inclusive, until exclusive
    assert users(Cohort(since=T0 + timedelta(hours=1))) == ["team-b", "solo"]
    assert users(Cohort(until=T0 + timedelta(hours=2))) == ["team-a", "team-b"]
    report = quality_report(records, Cohort(judge="judge-a"))
    assert (report.versions, report.in_cohort, report.scored) == (4, 2, 2)  # judge: scored only
    assert Cohort(users=frozenset({"b", "a"}), judge="j", since=T0).describe() == {
        "users": ["a", "b"], "judge": "j", "since": "2026-06-01T12:00:00+00:00"}


def test_report_as_json_and_as_aligned_text():
    report = quality_report([
        record("u1", 2, quality=score(4, 3, 0.7, no_summary=(2, 0.5))),
        record("u1", 3, at=T0 + timedelta(days=1), quality=score(2, 1, 0.6, scored=2)),
    ])
    doc = json.loads(json.dumps(report.as_dict()))
    assert doc["scored_windows"] == 2 and doc["overall"]["accuracy"] == 4 / 6
    assert doc["overall"]["lift"] == 0.25
    assert [r["label"] for r in doc["over_time"]["rows"]] == ["2026-06-01", "2026-06-02"]
    assert doc["over_time"]["rows"][0]["start"] == "2026-06-01T00:00:00+00:00"
    assert [r["label"] for r in doc["by_summary_age"]] == ["<1m", "<1h", "<1d", "<1w", ">=1w"]
    assert [r["label"] for r in doc["by_window_size"]] == ["1", "2-3", "4-7", "8+"]
    assert doc["judge_cost"]["total"]["judge_calls"] == 10

    text = format_report(report)
    assert text.startswith("quality of 2 scored windows")
    assert "lift of the summary: +0.250 accuracy (0.750 with vs 0.500 without, 1 window(s)" in text
    for title in ("overall", "accuracy over time (by day, UTC)", "accuracy against summary age",
                  "accuracy against window size (judged pairs per window)", "judge cost"):
        assert title in text.splitlines()
    overall = text.splitlines()[text.splitlines().index("overall") + 3]
    assert overall.split() == ["all", "2", "6", "0.667", "0.667", "1", "0.750", "0.500", "+0.250"]
    no_baseline = format_report(quality_report([record("u1", 2, quality=score())]))
    assert "no window carries the no-summary baseline" in no_baseline


def test_table_aligns_columns():
    lines = table(("", "n", "accuracy"), [["all", "12", "0.500"], ["<1m", "3", "-"]])
    assert lines == ["      n  accuracy",
                     "---  --  --------",
                     "all  12     0.500",
                     "<1m   3         -"]


def test_plot_series_are_the_report_tables():
    report = quality_report([
        record("u1", 2, quality=score(4, 3, 0.7, age=10, no_summary=(2, 0.5))),
        record("u1", 3, at=T0 + timedelta(days=1), quality=score(2, 1, 0.6, scored=2, age=4000)),
    ])
    over_time, by_age, by_size = plot_series(report)
    assert over_time.x == ("2026-06-01", "2026-06-02")
    assert over_time.lines == {"with summary": (0.75, 0.5),
                               "no summary (baseline windows)": (0.5, None)}
    assert by_age.x == ("<1m", "<1h", "<1d", "<1w", ">=1w")
    assert by_age.lines == {"with summary": (0.75, None, 0.5, None, None)}
    assert by_size.x == ("1", "2-3", "4-7", "8+")
    assert by_size.lines == {"with summary": (None, 0.5, 0.75, None)}


def test_write_plots_says_none_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises
    report = quality_report([record("u1", 2, quality=score())])
    assert write_plots(report, tmp_path / "plots") is None
    assert not (tmp_path / "plots").exists()
    assert "pip install -e '.[bench]'" in MATPLOTLIB_MISSING


def test_write_plots_draws_pngs_where_matplotlib_is_installed(tmp_path):
    report = quality_report([record("u1", 2, quality=score(no_summary=(2, 0.5)))])
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # the bench extra is optional: then there is nothing to draw
        assert write_plots(report, tmp_path) is None
        return
    made = write_plots(report, tmp_path / "plots")
    assert made is not None and [p.name for p in made] == [
        "quality-over-time.png", "quality-by-age.png", "quality-by-window-size.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in made)


# --- training records ----------------------------------------------------------------------

WINDOW = (triple(1), triple(2, rejected=NO_NEGATIVE), triple(3))


def test_each_version_is_paired_with_its_previous_summary_and_the_next_score():
    records = [  # any order across users and versions, as a full scan may give them
        record("u2", 2, triples=WINDOW, quality=score(2, 1, 0.6)),
        record("u1", 3, triples=WINDOW, quality=score(2, 2, 0.9, scored=2)),
        record("u1", 1, triples=WINDOW),
        record("u2", 1),
        record("u1", 2, triples=WINDOW, quality=score(2, 1, 0.4)),
    ]
    stats = ExportStats()
    lines = list(training_records(records, stats=stats))
    assert [(x["user_id"], x["version"]) for x in lines] == [("u1", 2), ("u1", 3), ("u2", 2)]
    first = lines[0]
    assert first["previous_version"] == 1
    assert first["previous_summary"] == "u1 summary v1"
    assert first["summary"] == "u1 summary v2"
    assert first["triples"] == [{"query": "q1", "chosen": "liked 1", "rejected": "disliked 1"},
                                {"query": "q2", "chosen": "liked 2", "rejected": NO_NEGATIVE},
                                {"query": "q3", "chosen": "liked 3", "rejected": "disliked 3"}]
    assert first["score"]["scored_version"] == 1  # judges previous_summary on these triples
    assert first["score"]["summary"]["mean_p_correct"] == 0.4
    assert first["next_score"]["scored_version"] == 2  # judges `summary` on the next window
    assert first["next_score"]["summary"]["mean_p_correct"] == 0.9
    assert first["model"] == "alignxplore" and first["created_at"] == "2026-06-01T12:00:00Z"
    assert lines[1]["previous_summary"] == "u1 summary v2" and lines[1]["next_score"] is None
    assert lines[2]["previous_summary"] == "u2 summary v1"
    assert set(first) == {"user_id", "version", "previous_version", "previous_summary",
                          "triples", "score", "summary", "next_score", "model", "created_at"}
    assert json.loads(json.dumps(lines)) == lines
    assert stats == ExportStats(written=3)


def test_next_score_only_when_the_next_version_scored_this_one():
    lines = list(training_records([
        record("u1", 1),
        record("u1", 2, triples=WINDOW),  # unscored: score null
        record("u1", 3, triples=WINDOW, quality=score(scored=1)),  # (inconsistent) scored v1
    ]))
    assert lines[0]["score"] is None and lines[0]["next_score"] is None


def test_versions_without_triples_rollbacks_and_missing_previous_are_skipped_and_counted():
    stats = ExportStats()
    lines = list(training_records([
        record("u1", 1, triples=WINDOW),
        record("u1", 2),  # no triples kept
        record("u1", 3, model=ROLLBACK_MODEL),
        record("u1", 4, triples=WINDOW, quality=score(scored=3)),
        record("u2", 5, triples=WINDOW),  # version 4 is not in the store
    ], stats=stats))
    assert [x["version"] for x in lines] == [4]
    assert lines[0]["previous_summary"] == "u1 summary v3"
    assert stats == ExportStats(written=1, no_triples=1, rollback=1, missing_previous=1)
    assert stats.skipped() == {"no_triples": 1, "rollback": 1, "missing_previous": 1}


def test_scored_only_min_pairs_and_the_cohort():
    records = [
        record("u1", 1, at=T0),
        record("u1", 2, at=T0 + timedelta(hours=1), triples=WINDOW, quality=score()),
        record("u1", 3, at=T0 + timedelta(hours=2), triples=WINDOW[:2]),
        record("v1", 1, at=T0),
        record("v1", 2, at=T0 + timedelta(hours=1), triples=(triple(9),), quality=score()),
    ]
    assert window_pairs(records[1]) == 2 and window_pairs(records[2]) == 1

    def written(**kw):
        stats = ExportStats()
        return [(x["user_id"], x["version"]) for x in training_records(records, stats=stats,
                                                                        **kw)], stats

    assert written()[0] == [("u1", 2), ("u1", 3), ("v1", 2)]
    keys, stats = written(scored_only=True)
    assert keys == [("u1", 2), ("v1", 2)] and stats.unscored == 1
    keys, stats = written(min_pairs=2)
    assert keys == [("u1", 2)] and stats.too_few_pairs == 2
    assert written(cohort=Cohort(user_prefix="v"))[0] == [("v1", 2)]
    assert written(cohort=Cohort(users=frozenset({"u1"})))[0] == [("u1", 2), ("u1", 3)]
    # the time range selects the line's own version; its previous one may lie outside it
    keys, _ = written(cohort=Cohort(since=T0 + timedelta(hours=2)))
    assert keys == [("u1", 3)]
    lines = list(training_records(records, Cohort(until=T0 + timedelta(hours=2),
                                                  users=frozenset({"u1"}))))
    assert [x["version"] for x in lines] == [2]
    assert lines[0]["previous_summary"] == "u1 summary v1"
    assert lines[0]["next_score"] is None  # v3 is outside the range but was looked up: unscored
