"""Prometheus and Alertmanager as local processes in the demo, when installed (Debian's
``prometheus`` and ``prometheus-alertmanager``; ``make setup`` installs both).

Prometheus scrapes every demo service with the chart's alert rules
(``charts/cdb/files/prometheus/alerts.yml``), their ``for:`` shortened to 15 s so a
killed service is told within a minute; Alertmanager routes every alert, firing and
resolved, to the notifier's webhook, as the chart does.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from cdb.demo.plan import PYTHON_SERVICES, DemoOptions, ServiceSpec

__all__ = ["RULES", "monitoring_specs", "notifier_env"]

RULES = (
    Path(__file__).resolve().parents[3] / "charts" / "cdb" / "files" / "prometheus" / "alerts.yml"
)
SCRAPED = PYTHON_SERVICES
DEMO_FOR = "15s"


def alertmanager_config(notifier_url: str, token_file: Path) -> dict[str, object]:
    """Every alert to the notifier, firing and resolved, with the admin credential read
    from ``token_file`` (never written into the config itself)."""
    return {
        "route": {"receiver": "notifier", "group_by": ["alertname"], "group_wait": "5s",
                  "group_interval": "30s", "repeat_interval": "4h"},
        "receivers": [{"name": "notifier", "webhook_configs": [
            {"url": f"{notifier_url}/alertmanager", "send_resolved": True,
             "http_config": {"authorization": {"credentials_file": str(token_file)}}}]}],
    }  # fmt: skip


def prometheus_config(
    services: list[ServiceSpec], alertmanager: str, rules: Path
) -> dict[str, object]:
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": [str(rules)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {"job_name": spec.name, "static_configs": [{"targets": [f"127.0.0.1:{spec.port}"]}]}
            for spec in services
            if spec.name in SCRAPED
        ],
    }


def monitoring_specs(
    options: DemoOptions, data_dir: Path, services: list[ServiceSpec], token_file: Path
) -> list[ServiceSpec]:
    """Alertmanager then Prometheus, configs written to ``data_dir/monitoring``; none when
    the binaries (or the notifier or the rules) are missing."""
    alertmanager_bin = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    prometheus_bin = shutil.which("prometheus")
    notifier = next((spec for spec in services if spec.name == "notifier"), None)
    if not (alertmanager_bin and prometheus_bin and notifier and RULES.exists()):
        return []
    folder = data_dir / "monitoring"
    folder.mkdir(parents=True, exist_ok=True)
    rules = folder / "alerts.yml"
    rules.write_text(re.sub(r"(?m)^(\s+for: )\S+$", rf"\g<1>{DEMO_FOR}", RULES.read_text()))
    am_port, prom_port = options.port("alertmanager"), options.port("prometheus")
    (folder / "alertmanager.yml").write_text(
        yaml.safe_dump(alertmanager_config(notifier.url, token_file))
    )
    (folder / "prometheus.yml").write_text(
        yaml.safe_dump(prometheus_config(services, f"127.0.0.1:{am_port}", rules))
    )
    return [
        ServiceSpec(
            name="alertmanager", module="alertmanager", port=am_port,
            executable=(alertmanager_bin,), health_path="/-/ready", optional=True,
            argv=(f"--config.file={folder / 'alertmanager.yml'}",
                  f"--storage.path={folder / 'alertmanager-data'}",
                  f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="),
        ),
        ServiceSpec(
            name="prometheus", module="prometheus", port=prom_port,
            executable=(prometheus_bin,), health_path="/-/ready", optional=True,
            argv=(f"--config.file={folder / 'prometheus.yml'}",
                  f"--storage.tsdb.path={folder / 'prometheus-data'}",
                  f"--web.listen-address=127.0.0.1:{prom_port}"),
        ),
    ]  # fmt: skip


def notifier_env(data_dir: Path) -> dict[str, str]:
    """The demo notifier: its VAPID key generated once in the data dir; channel URLs
    (secrets) from ``data_dir/notify-urls`` when the owner wrote one, never from argv."""
    env = {"VAPID_KEY_DIR": str(data_dir), "NOTIFY_GROUP_WAIT_S": "2"}
    urls = data_dir / "notify-urls"
    if urls.exists():
        env["NOTIFY_URLS"] = urls.read_text().strip()
    return env
