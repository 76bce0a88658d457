"""The Grafana dashboard shipped in the chart: it parses, every query names a metric the service
really exports (read from a real Prometheus exposition of our telemetry, every instrument given a
value), and the chart renders it as a sidecar-labelled ConfigMap only when asked."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from streamer.settings import Settings
from streamer.telemetry import setup_telemetry
from tests.chart.test_chart import CHART, MINIMAL, helm

pytestmark = pytest.mark.chart

DASHBOARD = CHART / "dashboards" / "prefstream.json"
_METRIC = re.compile(r"\b(streamer_[a-z_]+)\b")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queried_metrics() -> set[str]:
    return {m for panel in dashboard()["panels"] for t in panel.get("targets", ())
            for m in _METRIC.findall(t["expr"])}


def exported_metrics() -> set[str]:
    """Every series name of a real exposition, each instrument recorded once."""
    t = setup_telemetry(Settings())
    t.record_update("updated", 4)
    t.record_model_call(1.0, prompt_tokens=10, completion_tokens=5, ok=False)
    t.record_store_regression()
    t.record_parked("OutputRejected")
    t.record_buffered(1)
    t.record_dead_letter("invalid_json")
    t.record_freshness(2.0)
    t.record_quality(accuracy=0.5, p_correct=0.5, no_summary=0.5, age="<1m", judge="j", calls=1,
                     prompt_tokens=1, completion_tokens=1)
    for name in ("streamer_pool_in_flight", "streamer_pool_saturated", "streamer_pending_events",
                 "streamer_pending_users", "streamer_oldest_pending_age_seconds",
                 "streamer_parked_users", "streamer_consumer_lag", "streamer_ready"):
        t.observe_value(name, lambda: 1.0)
    text = t.metrics_text().decode()
    t.shutdown()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def test_dashboard_parses_and_every_panel_has_queries():
    d = dashboard()
    assert d["uid"] == "prefstream-overview" and d["title"] == "prefstream"
    graphs = [p for p in d["panels"] if p["type"] != "row"]
    assert len(graphs) >= 16
    for panel in graphs:
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
    assert {v["name"] for v in d["templating"]["list"]} == {"datasource", "job"}


def test_every_queried_metric_is_really_exported():
    queried, exported = queried_metrics(), exported_metrics()
    assert queried, "no metric found in the dashboard's queries"
    assert not queried - exported, f"the dashboard queries metrics nobody exports: " \
                                   f"{sorted(queried - exported)}"


def test_the_dashboard_covers_what_sres_watch():
    queried = queried_metrics()
    for needed in ("streamer_buffered_events_total", "streamer_consumer_lag",
                   "streamer_pending_users", "streamer_pending_events",
                   "streamer_oldest_pending_age_seconds", "streamer_updates_total",
                   "streamer_model_request_duration_seconds_bucket",
                   "streamer_model_tokens_total", "streamer_pool_saturated",
                   "streamer_freshness_seconds_bucket", "streamer_dead_letters_total",
                   "streamer_parked_users", "streamer_quality_accuracy_sum"):
        assert needed in queried, needed


def _render(*sets: str) -> list[dict]:
    args = ["template", "t", str(CHART), "-f", str(MINIMAL)]
    for s in sets:
        args += ["--set", s]
    proc = helm(*args)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def test_chart_renders_the_dashboard_configmap_only_when_enabled():
    def dashboards(docs):
        return [d for d in docs if d["kind"] == "ConfigMap" and "prefstream.json" in d["data"]]

    assert dashboards(_render()) == []
    [cm] = dashboards(_render("metrics.grafanaDashboard.enabled=true",
                              "metrics.grafanaDashboard.folder=Streaming"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Streaming"}
    assert json.loads(cm["data"]["prefstream.json"]) == dashboard()
    [cm] = dashboards(_render("metrics.grafanaDashboard.enabled=true",
                              "metrics.grafanaDashboard.label=dashboards",
                              "metrics.grafanaDashboard.labelValue=prefstream"))
    assert cm["metadata"]["labels"]["dashboards"] == "prefstream"
    assert "annotations" not in cm["metadata"]
