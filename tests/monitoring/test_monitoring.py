"""Prometheus and Grafana as the chart deploys them, checked by promtool and the code.

The Prometheus config and rules are taken from the rendered chart (not from a copy), so
what is checked is what runs: ``promtool check config``, ``promtool check rules``,
``promtool test rules`` (each alert quiet while fine, firing when not), and every metric
name in the dashboard and the rules must be listed in docs/METRICS.md and defined in the
Python sources of the services or the operator.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT
from tests.support.chart import CHART, dashboard, rendered_config_map

RULES_TEST = CHART / "files" / "prometheus" / "alerts_test.yml"
PROMETHEUS_OWN = {"up"}  # series Prometheus makes itself
SCRAPED_JOBS = {"bot_ws", "bot_rest", "signal_engine", "risk_manager", "execution_service"}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: run `make setup` (scripts/setup.d/22-promtool.sh)"
    return found


@pytest.fixture(scope="module")
def prometheus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """prometheus.yml and alerts.yml as rendered, the rule path pointed at this folder."""
    out = tmp_path_factory.mktemp("prometheus")
    data = rendered_config_map("prometheus-config", "--set", "mlAdvisor.enabled=true")
    (out / "alerts.yml").write_text(data["alerts.yml"])
    config = data["prometheus.yml"].replace("/etc/prometheus/alerts.yml", str(out / "alerts.yml"))
    (out / "prometheus.yml").write_text(config)
    return out


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_promtool_checks_the_rendered_config(prometheus_dir: Path) -> None:
    result = run(promtool(), "check", "config", str(prometheus_dir / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr
    config = yaml.safe_load((prometheus_dir / "prometheus.yml").read_text())
    assert config["global"]["scrape_interval"] == "15s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert SCRAPED_JOBS | {"ml_advisor", "cdb_operator", "console"} <= set(jobs)
    bot_ws = jobs["bot_ws"]["dns_sd_configs"][0]
    assert bot_ws == {"names": ["bot-ws.cdb.svc.cluster.local"], "type": "A", "port": 8000}


def test_promtool_checks_the_rules(prometheus_dir: Path) -> None:
    result = run(promtool(), "check", "rules", str(prometheus_dir / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_promtool_rule_tests_prove_each_alert_fires(prometheus_dir: Path) -> None:
    shutil.copy(RULES_TEST, prometheus_dir / "alerts_test.yml")
    result = run(promtool(), "test", "rules", str(prometheus_dir / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    rules = yaml.safe_load((prometheus_dir / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert alerts == {
        "CdbCircuitBreakerTripped", "CdbScreenerStale", "CdbServiceDown", "CdbDeadLetterGrowing",
        "CdbSignalEngineStale", "CdbMlAdvisorStale", "CdbNotificationsFailing",
    }  # fmt: skip
    cases = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fired = {c["alertname"] for t in cases for c in t["alert_rule_test"] if c["exp_alerts"]}
    quiet = {c["alertname"] for t in cases for c in t["alert_rule_test"] if not c["exp_alerts"]}
    assert fired == alerts, "every alert is proven to fire"
    assert quiet == alerts, "every alert is proven quiet while things are fine"


def test_promtool_rule_tests_fail_when_an_alert_would_not_fire(
    prometheus_dir: Path, tmp_path: Path
) -> None:
    """The rule tests have teeth: with the breaker rule broken they fail."""
    broken = (
        (prometheus_dir / "alerts.yml")
        .read_text()
        .replace("max(risk_circuit_breaker_active) == 1", "max(risk_circuit_breaker_active) == 2")
    )
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(RULES_TEST, tmp_path / "alerts_test.yml")
    result = run(promtool(), "test", "rules", str(tmp_path / "alerts_test.yml"))
    assert result.returncode != 0
    assert "CdbCircuitBreakerTripped" in result.stdout + result.stderr


# --- the dashboard ------------------------------------------------------------------


def test_dashboard_is_provisioned_and_well_formed() -> None:
    board = dashboard()
    assert board["title"] == "Claire de Binare" and board["uid"] == "claire-de-binare"
    provisioning = rendered_config_map("grafana-provisioning")
    datasource = yaml.safe_load(provisioning["datasources.yaml"])["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    dashboards = rendered_config_map("grafana-dashboards")
    assert json.loads(dashboards["claire-de-binare.json"]) == board
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
    movers = next(panel for panel in board["panels"] if "movers" in panel["title"].lower())
    (target,) = movers["targets"]
    # The current top movers only: an instant query (a range query lists every symbol that
    # was a mover at any moment of the dashboard's time range).
    assert target.get("instant") is True and target.get("range") is False, target
    titles = " ".join(panel["title"].lower() for panel in board["panels"])
    for topic in ("movers", "signals", "orders", "equity", "pnl", "exposure",
                  "circuit breaker", "health", "ticks per second", "latency"):  # fmt: skip
        assert topic in titles, f"no panel about {topic}"


# --- metric names against docs/METRICS.md and the code ------------------------------

PROMQL_WORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (functions, labels and keywords dropped)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        follows = text[match.end() :].lstrip()
        if follows.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def test_metric_name_extraction() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, job) (rate(cdb_handler_duration_seconds_bucket"
        '{job="x"}[5m]))) > 1 or absent(bot_ws_ticks_total) unless on(job) up'
    )
    assert metric_names(expr) == {"cdb_handler_duration_seconds_bucket", "bot_ws_ticks_total", "up"}


def used_metrics() -> set[str]:
    exprs = [t["expr"] for panel in dashboard()["panels"] for t in panel["targets"]]
    rules = yaml.safe_load((CHART / "files" / "prometheus" / "alerts.yml").read_text())
    exprs += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    names: set[str] = set()
    for expr in exprs:
        names |= metric_names(expr)
    return names - PROMETHEUS_OWN


def base_name(series: str) -> str:
    """A histogram's _bucket/_sum/_count series belong to the histogram's name."""
    return re.sub(r"_(bucket|sum|count)$", "", series)


@cache
def python_sources() -> str:
    files = [*(ROOT / "services").rglob("*.py"), *(ROOT / "operator").rglob("*.py")]
    return "\n".join(path.read_text(errors="replace") for path in files)


def defined_in_code(name: str) -> bool:
    """prometheus_client appends _total to counters, so either spelling may be in the code."""
    sources = python_sources()
    spellings = {name, name.removesuffix("_total")}
    return any(re.search(rf"""["']{re.escape(s)}["']""", sources) for s in spellings)


def test_code_lookup_finds_real_names_only() -> None:
    assert defined_in_code("risk_circuit_breaker_active")
    assert defined_in_code("cdb_dead_letters_total")
    assert not defined_in_code("cdb_no_such_metric_total")


def test_dashboard_and_rules_use_only_documented_metrics() -> None:
    documented = set(re.findall(r"`([a-z_:][a-z0-9_:]*)`", (ROOT / "docs/METRICS.md").read_text()))
    used = {base_name(name) for name in used_metrics()}
    assert len(used) >= 20
    undocumented = sorted(used - documented)
    assert not undocumented, f"not in docs/METRICS.md: {undocumented}"


def test_every_metric_in_the_dashboard_and_rules_is_exported_by_the_code() -> None:
    used = sorted({base_name(name) for name in used_metrics()})
    missing = [name for name in used if not defined_in_code(name)]
    assert not missing, (
        f"used in Grafana/alerts but defined nowhere in services/ or operator/: {missing}"
    )
