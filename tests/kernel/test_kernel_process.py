"""The kernel as a real process: crash recovery, graceful stop, HTTP, config errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cdb.core.bus import Bus
from cdb.core.events import MarketData, Stream
from tests.support import ROOT, ServiceProcess, eventually_async

WORKER = "tests.support.kernel_worker"


def market(i: int) -> MarketData:
    return MarketData(
        symbol=f"S{i}_USDT",
        price=1.0 + i,
        volume=200000.0,
        pct_change=3.5,
        timestamp=int(time.time()),
    )


def rows(postgresql: Any, sql: str) -> list[tuple[Any, ...]]:
    postgresql.commit()
    with postgresql.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


async def test_consumer_killed_mid_handler_its_entry_is_handled_once_by_another(
    bus: Bus, service_env: dict[str, str], postgresql: Any, tmp_path: Path
) -> None:
    env = {
        **service_env,
        "BUS_CLAIM_IDLE_MS": "500",
        "HANDLER_DELAY_S": "30",
        "CONSUMER_NAME": "doomed",
    }
    doomed = ServiceProcess(WORKER, env, tmp_path).start()
    doomed.wait_healthy(accept=("ok", "stale"))
    event = market(1)
    await bus.publish(event)
    # the handler has started (an attempt row) but not finished (no effect row)
    await eventually_async(
        lambda: rows(postgresql, "SELECT count(*) FROM kernel_attempts")[0][0] == 1
    )
    doomed.kill()
    assert rows(postgresql, "SELECT count(*) FROM kernel_effects") == [(0,)]

    survivor_env = {**env, "HANDLER_DELAY_S": "0", "CONSUMER_NAME": "survivor"}
    with ServiceProcess(WORKER, survivor_env, tmp_path) as survivor:
        survivor.wait_healthy(accept=("ok", "stale"))
        await bus.publish(market(2))
        await eventually_async(
            lambda: rows(postgresql, "SELECT count(*) FROM kernel_effects")[0][0] == 2
        )
        assert survivor.terminate() == 0
    effects = rows(postgresql, "SELECT event_id, consumer FROM kernel_effects ORDER BY 1")
    assert (event.event_id, "survivor") in effects
    assert len(effects) == 2
    attempts = rows(
        postgresql,
        f"SELECT consumer FROM kernel_attempts WHERE event_id = '{event.event_id}' ORDER BY id",
    )
    assert attempts == [("doomed",), ("survivor",)]
    info: Any = await bus.redis.xpending(Stream.MARKET_DATA.value, "kernel_worker")
    assert info["pending"] == 0


async def test_sigterm_finishes_and_acknowledges_the_entry_in_flight(
    bus: Bus, service_env: dict[str, str], postgresql: Any, tmp_path: Path
) -> None:
    env = {**service_env, "HANDLER_DELAY_S": "2"}
    worker = ServiceProcess(WORKER, env, tmp_path).start()
    worker.wait_healthy(accept=("ok", "stale"))
    await bus.publish(market(1))
    await eventually_async(
        lambda: rows(postgresql, "SELECT count(*) FROM kernel_attempts")[0][0] == 1
    )
    assert worker.terminate(timeout=30) == 0
    assert rows(postgresql, "SELECT count(*) FROM kernel_effects") == [(1,)]
    info: Any = await bus.redis.xpending(Stream.MARKET_DATA.value, "kernel_worker")
    assert info["pending"] == 0
    records = [json.loads(line) for line in worker.log_path.read_text().splitlines()]
    assert all(r["service"] == "kernel_worker" and "level" in r and "ts" in r for r in records)
    messages = [r["message"] for r in records]
    assert messages.index("stopping: finishing in-flight work") < messages.index("stopped")


async def test_health_status_and_metrics_endpoints(
    bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    # 4 s: wide enough that a loaded machine still sees "ok" between readiness and staleness
    env = {**service_env, "STALE_AFTER_S": "4", "SIGNAL_THRESHOLD_PCT": "3"}
    with ServiceProcess(WORKER, env, tmp_path) as worker:
        assert worker.wait_healthy() == {"status": "ok"}
        # ready means its consumer groups exist: nothing published from now on is missed
        groups = await bus.redis.xinfo_groups(Stream.MARKET_DATA.value)
        assert [g["name"] for g in groups] == [b"kernel_worker"]
        await eventually_async(lambda: httpx.get(f"{worker.url}/health").status_code == 503)
        stale = httpx.get(f"{worker.url}/health")
        assert stale.json()["status"] == "stale" and stale.json()["last_event_age_s"] > 4
        # a quiet input neither fails liveness nor readiness (no restart, still scraped)
        assert httpx.get(f"{worker.url}/livez").json() == {"status": "alive"}
        assert httpx.get(f"{worker.url}/readyz").status_code == 200
        await bus.publish(market(1))
        await eventually_async(lambda: httpx.get(f"{worker.url}/health").status_code == 200)

        status = worker.status()
        assert status["service"] == "kernel_worker"
        assert status["health"] == "ok"
        assert status["counters"]["events_consumed_total"] == 1.0
        assert status["config"]["postgres_db"] == service_env["POSTGRES_DB"]
        assert status["last_event_at"] > time.time() - 10
        assert "redis_password" not in status["config"]
        assert "test-only-redis-password" not in str(status)

        metrics = httpx.get(f"{worker.url}/metrics").text
        assert 'cdb_events_consumed_total{stream="cdb:market_data"} 1.0' in metrics
        assert "cdb_handler_duration_seconds_bucket" in metrics
        assert "kernel_worker_status 1.0" in metrics
        assert "cdb_last_event_age_seconds" in metrics


@pytest.mark.parametrize(
    ("env", "variable", "rule"),
    [
        ({"HTTP_PORT": "not-a-port"}, "HTTP_PORT", "valid integer"),
        ({"HTTP_PORT": "70000"}, "HTTP_PORT", "less than 65536"),
        ({"STALE_AFTER_S": "-1"}, "STALE_AFTER_S", "greater than 0"),
        ({"REDIS_PASSWORD": ""}, "REDIS_PASSWORD", "at least 1"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL", "should match pattern"),
    ],
)
def test_invalid_config_exits_with_one_line_naming_the_variable(
    redis_only_env: dict[str, str], env: dict[str, str], variable: str, rule: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", WORKER],
        env={"PATH": "/usr/bin:/bin", **redis_only_env, **env},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"config error: {variable}=")
    assert rule in lines[0]
    assert "Traceback" not in result.stderr
    if variable != "REDIS_PASSWORD":
        assert repr(env[variable]) in lines[0]


def test_a_missing_redis_password_is_named(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", WORKER],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "config error: REDIS_PASSWORD='<unset>': Field required"


def test_a_taken_http_port_fails_at_once_with_one_clear_line(
    redis_only_env: dict[str, str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", WORKER],
            env={
                "PATH": "/usr/bin:/bin",
                **redis_only_env,
                "HTTP_HOST": "127.0.0.1",
                "HTTP_PORT": str(port),
            },
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    (record,) = [json.loads(line) for line in result.stderr.splitlines()]
    assert record["message"] == f"cannot listen on 127.0.0.1:{port}: Address already in use"


def test_a_wrong_redis_password_stops_the_service_with_a_clear_line(
    redis_only_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**redis_only_env, "REDIS_PASSWORD": "wrong-password"}
    result = subprocess.run(
        [sys.executable, "-m", WORKER],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    messages = [json.loads(line)["message"] for line in result.stderr.splitlines()]
    assert any(
        m.startswith("redis rejected the credentials (check REDIS_PASSWORD)") for m in messages
    )
    assert "wrong-password" not in result.stderr
    assert "Traceback" not in result.stderr
