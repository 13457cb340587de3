"""The compose world (kompose/) is valid for the real docker-compose, and it, the chart and
the migration guide's mapping table say the same thing: same image, same commands, same
environment, names mapped only as the table says."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT
from tests.support.chart import helm_template

COMPOSE = ROOT / "kompose" / "docker-compose.yml"
GUIDE = ROOT / "docs" / "KUBERNETES_MIGRATION.md"
PYTHON_SERVICES = ["bot_ws", "bot_rest", "signal_engine", "risk_manager", "execution_service"]


def compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: run `make setup` (scripts/setup.d/23-docker.sh)"
    return subprocess.run(
        [binary, "-f", str(COMPOSE), "--env-file", str(env_file), "config", *args],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    env = tmp_path_factory.mktemp("compose") / ".env"
    env.write_text("REDIS_PASSWORD=r-test\nPOSTGRES_PASSWORD=p-test\nGRAFANA_ADMIN_PASSWORD=g\n")
    result = compose(env)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def mapping_table() -> dict[str, str]:
    """compose service → Kubernetes Service, from the guide's table."""
    rows = re.findall(r"^\| `([a-z_]+)` \| [^|]*?`([a-z-]+)`", GUIDE.read_text(), re.M)
    return dict(rows)


def test_docker_compose_accepts_the_file_and_demands_every_password(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("POSTGRES_PASSWORD=p\nGRAFANA_ADMIN_PASSWORD=g\n")
    result = compose(env, "-q")
    assert result.returncode != 0
    assert "set REDIS_PASSWORD in kompose/.env" in result.stderr


def test_compose_names_follow_the_seed_and_the_guide_maps_each_one(
    resolved: dict[str, Any],
) -> None:
    # volume_owner is compose's stand-in for the pods' fsGroup: no workload maps to it.
    services = set(resolved["services"]) - {"volume_owner"}
    assert {"cdb_redis", "cdb_postgres", *PYTHON_SERVICES, "prometheus", "grafana"} == services
    table = mapping_table()
    assert set(table) == services, f"the guide's table misses {services - set(table)}"
    result = helm_template("--set", "exchange.simulator.enabled=true", crds=False)
    objects = [d for d in yaml.safe_load_all(result.stdout) if d]
    k8s_services = {o["metadata"]["name"] for o in objects if o["kind"] == "Service"}
    assert set(table.values()) <= k8s_services, set(table.values()) - k8s_services
    assert table["cdb_postgres"] == "postgres" and table["cdb_redis"] == "redis"


def test_same_image_commands_and_environment_as_the_chart(resolved: dict[str, Any]) -> None:
    result = helm_template("--set", "operator.enabled=false", crds=False)
    objects = [d for d in yaml.safe_load_all(result.stdout) if d]
    chart_env = next(o for o in objects if o["metadata"]["name"] == "cdb-config")["data"]
    table = mapping_table()

    def to_k8s(value: str) -> str:
        for compose_name, k8s_name in table.items():
            value = re.sub(rf"\b{compose_name}\b", k8s_name, value)
        return value

    containers = {
        o["metadata"]["name"]: o["spec"]["template"]["spec"]["containers"][0]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet")
    }
    for name in PYTHON_SERVICES:
        service = resolved["services"][name]
        container = containers[table[name]]
        assert service["image"].split(":")[0] == container["image"].split(":")[0]
        assert service["command"] == container["command"], name
        env = service["environment"]
        k8s_env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["HTTP_PORT"] == k8s_env["HTTP_PORT"], name
        for key, value in chart_env.items():
            assert key in env, f"{name} lacks {key}"
            assert to_k8s(str(env[key])) == value, f"{name}: {key}={env[key]} vs {value}"
        secret_keys = {e["name"] for e in container["env"] if "valueFrom" in e}
        assert {"REDIS_PASSWORD", "POSTGRES_PASSWORD"} <= secret_keys & set(env)
        assert service["user"] == "1000:1000" and service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]


def test_compose_start_order_is_the_seeds(resolved: dict[str, Any]) -> None:
    def after(name: str) -> set[str]:
        return set(resolved["services"][name].get("depends_on", {}))

    assert after("bot_ws") >= {"cdb_redis", "cdb_postgres"}
    assert "bot_ws" in after("signal_engine")
    assert "signal_engine" in after("risk_manager") and "signal_engine" in after(
        "execution_service"
    )
    assert {"risk_manager", "execution_service"} <= after("prometheus")
    for name in PYTHON_SERVICES:
        conditions = {d["condition"] for d in resolved["services"][name]["depends_on"].values()}
        assert conditions == {"service_healthy"}, name


def test_compose_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run `make setup`"
    config = (ROOT / "kompose" / "prometheus.yml").read_text()
    alerts = ROOT / "charts" / "cdb" / "files" / "prometheus" / "alerts.yml"
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/etc/prometheus/alerts.yml", str(alerts))
    )
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
