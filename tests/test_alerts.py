"""The alert rules and the dashboard: valid, and only about metrics that exist.

promtool comes from Debian's ``prometheus`` package (.ci/run installs it);
without it the promtool tests skip and the name checks still run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from trader.metrics import Metrics

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "config" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "config" / "grafana" / "trader.json"

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool is not installed (apt install prometheus)")

# Series that come from Prometheus itself or from prometheus_client's default
# collectors (the global registry in production), not from trader.metrics.
_EXTERNAL = {"up", "process_start_time_seconds"}


def _names(text: str) -> set[str]:
    return set(re.findall(r"\b(trader_[a-z0-9_]+|process_[a-z_]+|up)\b", text))


def _known() -> set[str]:
    return Metrics(CollectorRegistry()).series_names() | _EXTERNAL


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    """``promtool check rules`` passes."""
    proc = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_metric_the_rules_use_exists() -> None:
    """A renamed metric cannot silently disable an alert."""
    text = RULES.read_text()  # every name in the file, descriptions included
    used = _names(text)
    assert len(used) > 15
    assert used - _known() == set()
    alerts = set(re.findall(r"^\s*- alert: (\w+)$", text, re.MULTILINE))
    assert {"TraderDown", "TraderNotReady", "TraderActorRestarting", "TraderEventLoopLagging",
            "TraderMarketDataStale", "TraderDrawdown", "TraderHalted",
            "TraderModelDrift"} <= alerts


def test_every_metric_the_dashboard_uses_exists() -> None:
    """The dashboard is valid JSON and queries only declared series."""
    dash = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("expr", "query", "definition") and isinstance(v, str):
                    exprs.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(dash)
    assert len(exprs) > 20
    used = set().union(*(_names(e) for e in exprs))
    assert used - _known() == set()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


_RULE_TESTS = """
rule_files: [{rules}]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      - series: 'up{{job="trader", instance="a:9108"}}'
        values: '1 1 0x12'
      - series: 'trader_ready{{job="trader", instance="a:9108"}}'
        values: '1 1 0x30'
      - series: 'trader_risk_state{{job="trader", instance="a:9108", state="HALTED"}}'
        values: '0 0 1x10'
      - series: 'trader_drawdown_ratio{{job="trader", instance="a:9108"}}'
        values: '0.02 0.05 0.12x10'
      - series: 'trader_last_bar_age_seconds{{job="trader", instance="a:9108"}}'
        values: '30+15x40'
      - series: 'trader_feed_timeframe_seconds{{job="trader", instance="a:9108"}}'
        values: '60x40'
      - series: 'trader_market_open{{job="trader", instance="a:9108"}}'
        values: '1x40'
      - series: 'trader_actor_restarts_total{{job="trader", instance="a:9108", actor="feed"}}'
        values: '0 0 1 2 3 4 4x10'
      - series: 'trader_model_drift_breach{{job="trader", instance="a:9108"}}'
        values: '0x4 1x100'
    alert_rule_test:
      - eval_time: 1m
        alertname: TraderDown
        exp_alerts: []
      - eval_time: 3m
        alertname: TraderDown
        exp_alerts:
          - exp_labels: {{severity: page, job: trader, instance: "a:9108"}}
      - eval_time: 2m
        alertname: TraderNotReady
        exp_alerts: []
      - eval_time: 6m
        alertname: TraderNotReady
        exp_alerts:
          - exp_labels: {{severity: page, job: trader, instance: "a:9108"}}
      - eval_time: 1m
        alertname: TraderHalted
        exp_alerts:
          - exp_labels: {{severity: page, job: trader, instance: "a:9108", state: HALTED}}
      - eval_time: 15s
        alertname: TraderDrawdown
        exp_alerts: []
      - eval_time: 1m
        alertname: TraderDrawdown
        exp_alerts:
          - exp_labels: {{severity: page, job: trader, instance: "a:9108"}}
      - eval_time: 2m
        alertname: TraderMarketDataStale
        exp_alerts: []
      - eval_time: 8m
        alertname: TraderMarketDataStale
        exp_alerts:
          - exp_labels: {{severity: page, job: trader, instance: "a:9108"}}
      - eval_time: 10m
        alertname: TraderModelDrift
        exp_alerts: []
      - eval_time: 20m
        alertname: TraderModelDrift
        exp_alerts:
          - exp_labels: {{severity: warn, instance: "a:9108"}}
      - eval_time: 2m
        alertname: TraderActorRestarting
        exp_alerts:
          - exp_labels: {{severity: warn, job: trader, instance: "a:9108", actor: feed}}
"""


def _without_annotations(text: str) -> str:
    """The rules minus their annotations (promtool compares them verbatim; the
    tests are about when alerts fire, not their wording)."""
    out: list[str] = []
    skip_deeper_than: int | None = None
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        if skip_deeper_than is not None:
            if not line.strip() or indent > skip_deeper_than:
                continue
            skip_deeper_than = None
        if line.strip() == "annotations:":
            skip_deeper_than = indent
            continue
        out.append(line)
    return "\n".join(out) + "\n"


@needs_promtool
def test_the_main_alerts_fire_when_they_should_and_not_before(tmp_path: Path) -> None:
    """``promtool test rules`` on synthetic series: down, not ready, halted, drawdown, stale,
    restarts, drift."""
    rules = tmp_path / "alerts.yml"
    rules.write_text(_without_annotations(RULES.read_text()))
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(_RULE_TESTS.format(rules=json.dumps(str(rules))))
    proc = subprocess.run(["promtool", "test", "rules", str(tests)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
