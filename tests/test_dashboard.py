"""The Grafana dashboard only queries metrics the code exports, and its provisioning fits together."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import switchboard.observability.metrics  # noqa: F401  (registers every metric)

REPO = Path(__file__).resolve().parents[1]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = json.loads((GRAFANA / "dashboards" / "switchboard.json").read_text())
ALERTS = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())

# Series Prometheus makes itself for every target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


def exported_series() -> set[str]:
    """Every series name a Switchboard process serves on /metrics (our metrics + process_*)."""
    names = set()
    for family in REGISTRY.collect():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords and labels removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        name = match.group()
        followed_by = expr[match.end() :].lstrip()[:1]
        if followed_by == "(" or name in _KEYWORDS or re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names


def panels() -> list[dict]:
    return [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]


def test_the_metric_name_parser_sees_through_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, stage) (rate(stage_latency_ms_bucket{job=~"a.*"}[5m])))'
        ' / on() group_left sum(rate(calls_total{outcome="completed"}[$__rate_interval])) or vector(0)'
    )
    assert metric_names(expr) == {"stage_latency_ms_bucket", "calls_total"}


def test_every_dashboard_query_uses_only_exported_metrics() -> None:
    exported = exported_series() | PROMETHEUS_SERIES
    unknown = {
        (title, name)
        for title, expr in queries()
        for name in metric_names(expr)
        if name not in exported
    }
    assert not unknown, f"dashboard queries name metrics nobody exports: {sorted(unknown)}"


@pytest.mark.parametrize(
    "metric", ["turn_rtt_ms_bucket", "calls_total", "queue_length", "worker_load"]
)
def test_exported_series_follow_prometheus_suffix_rules(metric: str) -> None:
    assert metric in exported_series()


def test_every_alert_uses_only_exported_metrics() -> None:
    exported = exported_series() | PROMETHEUS_SERIES
    for group in ALERTS["groups"]:
        for rule in group["rules"]:
            assert metric_names(rule["expr"]) <= exported, rule["alert"]


def test_the_dashboard_covers_the_architectures_views() -> None:
    rows = [p["title"] for p in DASHBOARD["panels"] if p["type"] == "row"]
    assert rows == ["Overview", "Latency", "Errors", "Queue and capacity", "Resources", "Admission"]
    kinds = {p["type"] for p in panels()}
    assert "heatmap" in kinds
    all_exprs = " ".join(expr for _title, expr in queries())
    for needed in (
        "turn_rtt_ms_bucket",
        "histogram_quantile(0.95",
        "stage_latency_ms_bucket",
        "calls_total",
        "provider_fallbacks_total",
        "queue_length",
        "worker_capacity",
        "process_resident_memory_bytes",
        "admission_decisions_total",
        "hold_queue_oldest_wait_seconds",
        "worker_admission_closed",
    ):
        assert needed in all_exprs, needed
    heatmap = next(p for p in panels() if p["type"] == "heatmap")
    assert heatmap["targets"][0]["format"] == "heatmap"


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in DASHBOARD["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine


def test_panels_use_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uid = provisioned["datasources"][0]["uid"]
    for p in panels():
        assert p["datasource"]["uid"] == uid, p["title"]
        assert p["targets"], f"{p['title']} has no query"
        assert all(t["datasource"]["uid"] == uid for t in p["targets"])


def test_the_dashboard_provider_points_where_compose_mounts_the_dashboards() -> None:
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "switchboard.yml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    for compose_file in ("docker-compose.yml", "docker-compose.prod.yml"):
        compose = yaml.safe_load((REPO / compose_file).read_text())
        mounts = compose["services"]["grafana"]["volumes"]
        assert f"./deploy/grafana/dashboards:{path}:ro" in mounts, compose_file
