"""The alert path with real parts: Debian's Prometheus and Alertmanager processes, with the
chart's own alert rules, Prometheus alerting section and Alertmanager route, scraping a
running signal_engine; the notifier (a real process) delivers to a local webhook.

Only durations are shortened so the test takes seconds: scrape and evaluation every
second, the rules' ``for:`` removed, Alertmanager's group waits set through chart values.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support import (
    ADMIN_TOKEN,
    FAST_BUS,
    Daemon,
    ServiceProcess,
    binary,
    eventually_async,
    free_port,
)
from tests.support.chart import rendered_config_map
from tests.support.notify_receiver import Receiver, notifier_env


def alertmanager_config(notifier_url: str, token_file: Path) -> str:
    """The chart's alertmanager.yml, only the notifier's address and the path of the
    mounted admin credential made local."""
    data = rendered_config_map(
        "alertmanager-config",
        "--set", "alertmanager.groupWait=1s",
        "--set", "alertmanager.groupInterval=2s",
    )  # fmt: skip
    config = yaml.safe_load(data["alertmanager.yml"])
    (receiver,) = config["receivers"]
    (hook,) = receiver["webhook_configs"]
    assert hook == {
        "url": "http://notifier:8006/alertmanager",
        "send_resolved": True,
        "http_config": {
            "authorization": {"credentials_file": "/etc/alertmanager-admin/admin-token"}
        },
    }
    assert config["route"]["receiver"] == receiver["name"], "every alert goes to the notifier"
    hook["url"] = f"{notifier_url}/alertmanager"
    hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    return yaml.safe_dump(config)


def prometheus_config(folder: Path, alertmanager: str, target: str) -> str:
    """The chart's prometheus.yml and rules: its alerting section aimed at the local
    Alertmanager, one scrape job for the local signal_engine, every second."""
    data = rendered_config_map("prometheus-config")
    config = yaml.safe_load(data["prometheus.yml"])
    assert config["alerting"]["alertmanagers"] == [
        {"static_configs": [{"targets": ["alertmanager:9093"]}]}
    ]
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [alertmanager]
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["scrape_configs"] = [
        {"job_name": "signal_engine", "static_configs": [{"targets": [target]}]}
    ]
    rules = yaml.safe_load(data["alerts.yml"])
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)
    (folder / "alerts.yml").write_text(yaml.safe_dump(rules))
    config["rule_files"] = [str(folder / "alerts.yml")]
    return yaml.safe_dump(config)


def titles(receiver: Receiver) -> list[str]:
    return [str(r.json()["title"]) for r in receiver.accepted("/hook")]


async def test_a_killed_service_fires_the_charts_rule_through_alertmanager_to_one_message(
    service_env: dict[str, str], receiver: Receiver, tmp_path: Path
) -> None:
    daemons: list[Daemon] = []
    engine = ServiceProcess("cdb.signal_engine", {**service_env, **FAST_BUS}, tmp_path)
    notifier = ServiceProcess(
        "cdb.notifier", notifier_env(service_env, receiver, NOTIFY_GROUP_WAIT_S="0.5"), tmp_path
    )
    try:
        engine.start().wait_healthy(accept=("ok", "stale"))
        notifier.start().wait_healthy()
        am_port, prom_port = free_port(), free_port()
        token = tmp_path / "admin-token"  # what the chart mounts from the cdb-admin Secret
        token.write_text(ADMIN_TOKEN)
        (tmp_path / "alertmanager.yml").write_text(alertmanager_config(notifier.url, token))
        alertmanager = Daemon(
            [binary("prometheus-alertmanager"),
             f"--config.file={tmp_path / 'alertmanager.yml'}",
             f"--storage.path={tmp_path / 'am-data'}",
             f"--web.listen-address=127.0.0.1:{am_port}",
             "--cluster.listen-address="],
            tmp_path / "alertmanager.log", f"http://127.0.0.1:{am_port}/-/ready",
        )  # fmt: skip
        daemons.append(alertmanager)
        target = f"127.0.0.1:{engine.port}"
        (tmp_path / "prometheus.yml").write_text(
            prometheus_config(tmp_path, f"127.0.0.1:{am_port}", target)
        )
        prometheus = Daemon(
            [binary("prometheus"),
             f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'prom-data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            tmp_path / "prometheus.log", f"http://127.0.0.1:{prom_port}/-/ready",
        )  # fmt: skip
        daemons.append(prometheus)
        alertmanager.wait_ready()
        prometheus.wait_ready()

        def up() -> list[Any]:
            reply = httpx.get(f"http://127.0.0.1:{prom_port}/api/v1/query", params={"query": "up"})
            return [s["value"][1] for s in reply.json()["data"]["result"]]

        await eventually_async(lambda: up() == ["1"], timeout=30, what="signal_engine scraped")
        assert not [t for t in titles(receiver) if "is down" in t], "quiet while it runs"

        engine.kill()
        down = f"signal_engine at {target} is down"
        await eventually_async(
            lambda: down in titles(receiver), timeout=60, what="the down message"
        )

        engine.start().wait_healthy(accept=("ok", "stale"))
        resolved = f"Resolved: {down}"
        await eventually_async(lambda: resolved in titles(receiver), timeout=60, what="resolved")
        time.sleep(3.0)  # Alertmanager re-sends its groups every 2 s: still one each
        assert titles(receiver).count(down) == 1
        assert titles(receiver).count(resolved) == 1
        status = notifier.status()
        kinds = [n["kind"] for n in status["recent"]]
        assert kinds.count("prometheus:CdbServiceDown") == 2  # firing, then resolved
    finally:
        for daemon in reversed(daemons):
            daemon.stop()
        engine.__exit__()
        notifier.__exit__()
