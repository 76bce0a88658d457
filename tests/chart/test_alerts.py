"""The chart's alerts (templates/prometheusrule.yaml): every rule passes `promtool check rules`
and the `promtool test rules` cases of tests/chart/alerts/ on synthetic series, every alert has
a runbook section, every series they read is one the service exports, and the values shape them.

`promtool` is built from the Go module proxy by `make promtool` (deploy/tools/promtool.sh);
without it these tests fail, they never skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.chart.test_chart import (
    MINIMAL,
    NAMESPACE,
    RELEASE,
    ROOT,
    _template_args,
    helm,
    named,
    of_kind,
    render,
)
from tests.chart.test_dashboard import exported_metrics

pytestmark = pytest.mark.chart

PROMTOOL = ROOT / ".tools" / "bin" / "promtool"
CASES = Path(__file__).parent / "alerts" / "prefstream.test.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
ON = "metrics.prometheusRule.enabled=true"
ALERTS = {  # alert -> its values key under metrics.prometheusRule
    "PrefstreamConsumerLagGrowing": "lagGrowing",
    "PrefstreamPendingWindowTooOld": "pendingTooOld",
    "PrefstreamUsersParked": "parkedUsers",
    "PrefstreamDeadLetterRateHigh": "deadLetters",
    "PrefstreamModelErrorRateHigh": "modelErrors",
    "PrefstreamStoreRegression": "storeRegression",
    "PrefstreamWorkerNotReady": "notReady",
    "PrefstreamNoUpdatesWhileEventsFlow": "noUpdates",
}
_SERIES = re.compile(r"\b(streamer_[a-z_]+)\b")


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if not PROMTOOL.exists():
        pytest.fail(f"{PROMTOOL.relative_to(ROOT)} is missing: run `make promtool` (builds "
                    "promtool from the Go module proxy)", pytrace=False)
    return subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def rule_doc(sets: tuple[str, ...] = (), set_json: tuple[str, ...] = ()) -> dict:
    """The rendered PrometheusRule; ``set_json`` for decimals (`--set` keeps 0.05 a string)."""
    if not set_json:
        docs = render((MINIMAL,), (ON, *sets))
    else:
        extra = tuple(a for j in set_json for a in ("--set-json", j))
        proc = helm(*_template_args((MINIMAL,), (ON, *sets), extra=extra))
        assert proc.returncode == 0, proc.stderr
        docs = tuple(d for d in yaml.safe_load_all(proc.stdout) if d)
    return named(docs, "PrometheusRule", f"{RELEASE}-prefstream")


def rules(sets: tuple[str, ...] = ()) -> dict[str, dict]:
    return {r["alert"]: r for g in rule_doc(sets)["spec"]["groups"] for r in g["rules"]}


def run_cases(tmp_path: Path, doc: dict, cases: str | None = None) -> subprocess.CompletedProcess:
    """Write the rendered groups as a Prometheus rule file beside the cases and run promtool."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": doc["spec"]["groups"]}))
    if cases is None:
        shutil.copy(CASES, tmp_path / CASES.name)
    else:
        (tmp_path / CASES.name).write_text(cases)
    return promtool("test", "rules", CASES.name, cwd=tmp_path)


# --------------------------------------------------------------------------- promtool


def test_rendered_rules_pass_promtool_check(tmp_path):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_doc()["spec"]["groups"]}))
    proc = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in proc.stdout + proc.stderr


def test_every_alert_passes_its_promtool_cases(tmp_path):
    proc = run_cases(tmp_path, rule_doc())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_the_cases_fail_on_a_wrong_threshold_or_window(tmp_path):
    """The cases pin the behaviour: shifted thresholds make promtool report failures."""
    for sets, set_json in ((("metrics.prometheusRule.lagGrowing.threshold=50000",), ()),
                           (("metrics.prometheusRule.pendingTooOld.thresholdS=3000",), ()),
                           ((), ("metrics.prometheusRule.modelErrors.ratio=0.05",)),
                           ((), ("metrics.prometheusRule.deadLetters.ratio=0.2",)),
                           (("metrics.prometheusRule.notReady.for=30m",), ()),
                           (("metrics.prometheusRule.noUpdates.window=90m",), ())):
        out = tmp_path / (sets or set_json)[0].split(".")[2]  # the alert's values key
        out.mkdir()
        proc = run_cases(out, rule_doc(sets, set_json))
        assert proc.returncode != 0, f"{sets or set_json}: the promtool cases still pass"
        assert "FAILED" in proc.stdout + proc.stderr


def test_each_alert_has_a_firing_case_and_a_near_miss():
    cases = yaml.safe_load(CASES.read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for t in case["alert_rule_test"]:
            (fired if t.get("exp_alerts") else quiet).add(t["alertname"])
    assert fired == set(ALERTS) == quiet


# --------------------------------------------------------------------------- runbook


def _slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_links_its_runbook_section():
    text = RUNBOOK.read_text()
    sections = {_slug(h): h for h in re.findall(r"^## (.+)$", text, flags=re.M)}
    base = yaml.safe_load((ROOT / "helm/prefstream/values.yaml").read_text())[
        "metrics"]["prometheusRule"]["runbookUrl"]
    assert base.endswith("/docs/runbook.md")
    for name, rule in rules().items():
        url = rule["annotations"]["runbook_url"]
        base_url, _, anchor = url.partition("#")
        assert base_url == base and anchor in sections, f"{name}: {url} has no section"
        body = text.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("**Meaning.**", "**Confirm.**", "**Act.**"):
            assert part in body, f"runbook section {name} lacks {part}"
    alert_sections = {h for h in sections.values() if h.startswith("Prefstream")}
    assert alert_sections == set(ALERTS), "runbook sections without an alert, or the reverse"


def test_alerts_have_summary_description_severity():
    for name, rule in rules().items():
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert re.fullmatch(r"[0-9]+[smh]", rule["for"]), name


def test_rules_read_only_series_the_service_exports():
    exported = exported_metrics()
    for name, rule in rules().items():
        used = set(_SERIES.findall(rule["expr"]))
        assert used, f"{name} reads no prefstream series"
        assert not used - exported, f"{name} reads series nobody exports: {used - exported}"


# --------------------------------------------------------------------------- values


def test_off_by_default_and_each_alert_can_be_switched_off():
    assert not of_kind(render((MINIMAL,)), "PrometheusRule")
    assert set(rules()) == set(ALERTS)
    for name, key in ALERTS.items():
        left = rules((f"metrics.prometheusRule.{key}.enabled=false",))
        assert set(left) == set(ALERTS) - {name}


def test_selector_labels_namespace_and_severity_come_from_values():
    default = rules()["PrefstreamUsersParked"]["expr"]
    assert f'job="{RELEASE}-prefstream-worker",namespace="{NAMESPACE}"' in default
    doc = rule_doc(("metrics.prometheusRule.selector=app=\"pfs\"",
                    "metrics.prometheusRule.namespace=monitoring",
                    "metrics.prometheusRule.labels.release=kube-prometheus-stack",
                    "metrics.prometheusRule.alertLabels.team=personalization",
                    "metrics.prometheusRule.parkedUsers.severity=critical",
                    "metrics.prometheusRule.parkedUsers.threshold=3"))
    assert doc["metadata"]["namespace"] == "monitoring"
    assert doc["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    parked = {r["alert"]: r for g in doc["spec"]["groups"] for r in g["rules"]}[
        "PrefstreamUsersParked"]
    assert parked["expr"] == 'sum(streamer_parked_users{app="pfs"}) > 3'
    assert parked["labels"] == {"severity": "critical", "team": "personalization"}


def test_window_age_shapes_the_age_and_no_update_alerts():
    """A long window (MAX_AGE_S=900) is not an outage: both thresholds follow it."""
    long = rules(("config.window.maxAgeS=900",))
    assert long["PrefstreamPendingWindowTooOld"]["expr"].endswith("> 2400")  # 2 x 900 + 600
    assert "[2100s]" in long["PrefstreamNoUpdatesWhileEventsFlow"]["expr"]  # 2 x 900 + 300
    short = rules()
    assert short["PrefstreamPendingWindowTooOld"]["expr"].endswith("> 660")
    assert "[1800s]" in short["PrefstreamNoUpdatesWhileEventsFlow"]["expr"]  # at least 30m
    fixed = rules(("metrics.prometheusRule.pendingTooOld.thresholdS=120",
                   "metrics.prometheusRule.noUpdates.window=2h"))
    assert fixed["PrefstreamPendingWindowTooOld"]["expr"].endswith("> 120")
    assert "[2h]" in fixed["PrefstreamNoUpdatesWhileEventsFlow"]["expr"]
