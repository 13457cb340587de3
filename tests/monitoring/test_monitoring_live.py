"""The monitoring as a real Prometheus (Debian's) sees it, scraping a running
signal_engine every second: what the dashboard and the rules read must be there in a
healthy run, and the dead-letter rule must catch the first dead letter after a start."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cdb.core.bus import Bus
from cdb.core.events import Stream
from tests.support import FAST_BUS, Daemon, ServiceProcess, binary, eventually_async, free_port
from tests.support.chart import CHART, dashboard


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        body = reply.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


@pytest.fixture
def engine(service_env: dict[str, str], tmp_path: Path) -> Iterator[ServiceProcess]:
    with ServiceProcess("cdb.signal_engine", {**service_env, **FAST_BUS}, tmp_path) as proc:
        proc.wait_healthy(accept=("ok", "stale"))
        yield proc


@pytest.fixture
def prometheus(engine: ServiceProcess, tmp_path: Path) -> Iterator[Prometheus]:
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "signal_engine",
                "static_configs": [{"targets": [f"127.0.0.1:{engine.port}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    daemon = Daemon(
        [binary("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'prom-data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        tmp_path / "prometheus.log", f"http://127.0.0.1:{port}/-/ready",
    )  # fmt: skip
    try:
        daemon.wait_ready()
        server = Prometheus(f"http://127.0.0.1:{port}")
        yield server
    finally:
        daemon.stop()


def rule_expr(name: str) -> str:
    rules = yaml.safe_load((CHART / "files" / "prometheus" / "alerts.yml").read_text())
    return next(r["expr"] for g in rules["groups"] for r in g["rules"] if r["alert"] == name)


async def scraped(prometheus: Prometheus, samples: int = 3) -> None:
    await eventually_async(
        lambda: (
            prometheus.query("count_over_time(up[1m])")
            and float(prometheus.query("count_over_time(up[1m])")[0]["value"][1]) >= samples
        ),
        timeout=30,
        what=f"{samples} scrapes",
    )


async def test_the_dead_letter_panel_has_data_in_a_healthy_run(prometheus: Prometheus) -> None:
    await scraped(prometheus)
    panel = next(p for p in dashboard()["panels"] if "Dead letters" in p["title"])
    for target in panel["targets"]:
        result = prometheus.query(target["expr"])
        assert result, f"'No data' in a healthy run: {target['expr']}"
        assert {float(series["value"][1]) for series in result} == {0.0}


async def test_the_first_dead_letter_after_a_start_fires_the_dead_letter_rule(
    bus: Bus, prometheus: Prometheus
) -> None:
    await scraped(prometheus)
    expr = rule_expr("CdbDeadLetterGrowing")
    assert prometheus.query(expr) == []  # quiet while fine
    await bus.redis.xadd(Stream.MARKET_DATA.value, {b"event": b'{"type": "market_data"}'})
    await eventually_async(
        lambda: bool(prometheus.query(expr)), timeout=30, what="the rule sees the dead letter"
    )
    (series,) = prometheus.query(expr)
    assert series["metric"] == {"job": "signal_engine", "stream": "cdb:market_data"}


async def test_process_cpu_memory_and_gc_series_are_exported(prometheus: Prometheus) -> None:
    await scraped(prometheus)
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_open_fds", "python_gc_collections_total", "python_info"):  # fmt: skip
        assert prometheus.query(name), f"{name} is not exported"
    rss = float(prometheus.query("process_resident_memory_bytes")[0]["value"][1])
    assert rss > 10e6, json.dumps(prometheus.query("process_resident_memory_bytes"))
