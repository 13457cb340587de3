"""The demo's Prometheus and Alertmanager: configs the real tools accept, the chart's
rules with shorter ``for:``, every alert routed to the notifier incl. resolved."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from cdb.demo.monitoring import RULES, monitoring_specs, notifier_env
from cdb.demo.plan import DemoOptions, demo_plan

STACK = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": "1", "REDIS_PASSWORD": "x"}


def test_demo_monitoring_configs_pass_promtool_and_amtool(tmp_path: Path) -> None:
    options = DemoOptions(port_offset=100)
    services = demo_plan(options, STACK, available=("notifier",))
    specs = monitoring_specs(options, tmp_path, services, tmp_path / "admin.token")
    assert [s.name for s in specs] == ["alertmanager", "prometheus"]
    assert [s.port for s in specs] == [9193, 9190]
    folder = tmp_path / "monitoring"
    check = subprocess.run(
        [shutil.which("promtool") or "promtool", "check", "config", str(folder / "prometheus.yml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    am = subprocess.run(
        [shutil.which("amtool") or "amtool", "check-config", str(folder / "alertmanager.yml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert am.returncode == 0, am.stdout + am.stderr
    config = yaml.safe_load((folder / "alertmanager.yml").read_text())
    assert config["receivers"][0]["webhook_configs"] == [
        {
            "url": "http://127.0.0.1:8106/alertmanager",
            "send_resolved": True,
            "http_config": {"authorization": {"credentials_file": str(tmp_path / "admin.token")}},
        }
    ]
    prometheus = yaml.safe_load((folder / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in prometheus["scrape_configs"]}
    assert {"signal_engine", "risk_manager", "notifier", "bot_ws"} <= jobs
    rules = yaml.safe_load((folder / "alerts.yml").read_text())
    chart = yaml.safe_load(RULES.read_text())
    names = [[r["alert"] for r in g["rules"]] for g in rules["groups"]]
    assert names == [[r["alert"] for r in g["rules"]] for g in chart["groups"]]
    assert {r.get("for") for g in rules["groups"] for r in g["rules"]} <= {"15s", None}


def test_demo_notifier_reads_its_channels_from_a_file_in_the_data_dir(tmp_path: Path) -> None:
    assert "NOTIFY_URLS" not in notifier_env(tmp_path)
    (tmp_path / "notify-urls").write_text("ntfy://example/topic\n")
    env = notifier_env(tmp_path)
    assert env["NOTIFY_URLS"] == "ntfy://example/topic" and env["VAPID_KEY_DIR"] == str(tmp_path)
