"""The dashboards and alerts (k8s/observability) are checked offline: promtool on the rules and
their unit tests, every metric a query names is one the code exports (collected from the
registries in-process), the dashboards match their generator, and the ServiceMonitor schema
is strict. Unit-level: no cluster, no server. promtool is built from the Prometheus Go module
by tools/k8s_check.sh on first use (a long build, then cached under .tutti/)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.metrics import GatewayCounters
from runtime.metrics import Metrics
from services.inventory.adapters.metrics import PrometheusStockCounters
from services.orchestrator.adapters.metrics import PrometheusOrderCounters
from services.returns.adapters.metrics import PrometheusReturnCounters
from tools import gen_dashboards

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "k8s" / "observability"
CHECK = ROOT / "tools" / "k8s_check.sh"
# Series Prometheus itself adds to every scrape.
FROM_PROMETHEUS = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# Declared on the registry by each process's composition root.
BUSINESS = (PrometheusOrderCounters, PrometheusStockCounters, PrometheusReturnCounters, GatewayCounters)


def exported_names() -> set[str]:
    """Every series name a Tutti process can expose: the runtime's, then each service's."""
    names: set[str] = set()
    for declare in BUSINESS:
        metrics = Metrics("check")
        declare(metrics)
        names |= metrics.names()
    return names


def rules() -> dict[str, Any]:
    document = yaml.safe_load((OBSERVABILITY / "prometheus-rule.yaml").read_text())
    assert document["kind"] == "PrometheusRule"
    return dict(document["spec"])


def rule_expressions() -> dict[str, str]:
    return {
        rule.get("alert") or rule["record"]: rule["expr"]
        for group in rules()["groups"]
        for rule in group["rules"]
    }


def dashboard_expressions() -> dict[str, str]:
    out = {}
    for path in sorted((OBSERVABILITY / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                out[f"{path.name}: {panel['title']} {target['refId']}"] = target["expr"]
    return out


_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
    "offset", "inf", "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects. Strips what is not a metric name: strings,
    label matchers, ranges, grouping clauses, Grafana variables, function calls and numbers."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\$\{?\w+\}?", "", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)\s*(\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _KEYWORDS or re.fullmatch(r"\d+\w*", word):
            continue
        names.add(word)
    return names


def test_the_name_extraction_finds_selectors_and_only_them() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (job, le) (rate(rpc_server_duration_seconds_bucket{job=~"$job",'
        'rpc_method!~"Watch.*"}[$__rate_interval]))) > 1 and on(job) up offset 5m'
    )
    assert metric_names(expr) == {"rpc_server_duration_seconds_bucket", "up"}


def test_every_metric_the_alerts_and_dashboards_use_is_exported() -> None:
    exported = exported_names() | FROM_PROMETHEUS
    recorded = {name for name in rule_expressions() if ":" in name}
    used = {**rule_expressions(), **dashboard_expressions()}
    assert len(used) > 30
    for where, expr in used.items():
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        unknown = names - exported - recorded
        assert not unknown, f"{where} uses {sorted(unknown)}, which no Tutti process exports"


def test_every_business_series_is_on_a_dashboard() -> None:
    dashboards = " ".join(dashboard_expressions().values())
    runtime_names = Metrics("check").names()
    for name in exported_names() - runtime_names:
        if name.endswith("_total"):
            assert name in dashboards, f"{name} is exported but on no dashboard"


def test_the_dashboards_are_what_the_generator_writes() -> None:
    for name, text in gen_dashboards.render().items():
        assert (OBSERVABILITY / "dashboards" / name).read_text() == text, (
            f"{name} is stale: run python -m tools.gen_dashboards"
        )
    listed = yaml.safe_load((OBSERVABILITY / "kustomization.yaml").read_text())
    files = {Path(f).name for f in listed["configMapGenerator"][0]["files"]}
    assert files == set(gen_dashboards.DASHBOARDS)


def test_every_alert_has_a_severity_and_a_runbook_section() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    for group in rules()["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
            anchor = rule["annotations"]["runbook"].split("#", 1)[1]
            assert anchor == rule["alert"].lower()
            assert f"### {rule['alert']}" in operations, f"docs/operations.md says nothing of {rule['alert']}"


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(CHECK), "promtool", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=1800,
        check=False,
    )
    if result.returncode == 3:
        pytest.fail(f"tools/k8s_check.sh could not install promtool:\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PrometheusRule's spec as the rules file Prometheus loads, with its unit tests."""
    directory = tmp_path_factory.mktemp("rules")
    (directory / "rules.yaml").write_text(yaml.safe_dump(rules()))
    (directory / "alerts.test.yaml").write_text((OBSERVABILITY / "alerts.test.yaml").read_text())
    return directory


def test_promtool_accepts_the_rules(rules_dir: Path) -> None:
    result = _promtool("check", "rules", "--lint-fatal", "rules.yaml", cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_fire_when_they_should_and_only_then(rules_dir: Path) -> None:
    result = _promtool("test", "rules", "alerts.test.yaml", cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_service_monitor_schema_rejects_an_unknown_field(tmp_path: Path) -> None:
    monitor = yaml.safe_load((OBSERVABILITY / "service-monitor.yaml").read_text())
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(monitor))
    result = subprocess.run(
        [str(CHECK), "validate", str(path)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHON": sys.executable},
        timeout=900, check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "intervall" in result.stdout + result.stderr
