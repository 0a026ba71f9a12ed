"""Prometheus configuration and alert rules, checked and unit-tested by promtool itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS = REPO / "deploy" / "prometheus"
RUNBOOK = REPO / "docs" / "runbook.md"
SEED_ALERTS = {
    "SwitchboardTurnLatencyHigh",
    "SwitchboardCallSuccessRateLow",
    "SwitchboardQueueBacklog",
    "SwitchboardCallersHeldTooLong",
    "SwitchboardWorkerFailureRate",
}

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed: Debian package 'prometheus' (scripts/bootstrap.sh)",
)


def promtool(*args: str) -> str:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.compose.yml"])
def test_prometheus_config_is_valid(config: str) -> None:
    assert "SUCCESS" in promtool("check", "config", config)


def test_alert_rules_are_valid() -> None:
    assert "5 rules found" in promtool("check", "rules", "alerts.yml")


def test_alert_rules_pass_their_unit_tests() -> None:
    promtool("test", "rules", "tests/alerts_test.yml")


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_the_four_seed_alerts_exist_each_with_a_for_duration_and_a_runbook_section() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert set(rules) == SEED_ALERTS
    runbook = RUNBOOK.read_text().lower()
    for name, rule in rules.items():
        assert rule.get("for"), f"{name} has no for:"
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"]
        anchor = annotations["runbook_url"].split("#", 1)[1]
        assert f"## {anchor}" in runbook, f"docs/runbook.md has no section for {name}"


def test_every_alert_is_exercised_by_the_unit_tests() -> None:
    tests = yaml.safe_load((PROMETHEUS / "tests" / "alerts_test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])}
    firing = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested == firing == SEED_ALERTS
