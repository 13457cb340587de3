"""The screener: deals/s on one core, CPU per 1,000 deals/s, memory at 1,000 symbols, and
reconnect-to-first-candle time — bot_ws and mexc_sim as processes, each pinned to its own
core where the machine has two.

1. ``parse+aggregate``: the pure path (frame parse → candle/window update) in this process
   over frames the simulator's market produced, CPU time only: the ceiling of one core.
2. ``end-to-end``: mexc_sim with 1,000 symbols pushing as fast as it can (speed 240 asks
   for 240,000 deals/s, more than one core generates, so the market runs behind the wall
   clock at the simulator's maximum rate) and bot_ws reading 5 chunks of 200 on one core,
   publishing candles and movers to the ``make bench`` Redis (db 4); 20 s measured
   after a 10 s warm-up: deals/s processed (``bot_ws_ticks_total``), bot_ws CPU, RSS.
3. ``reconnect``: 40 symbols at speed 60; the simulator drops every socket; time to the
   reconnect, to the first candle published after it, and to the gap minute backfilled.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from redis import Redis

from cdb.bot_ws.frames import parse_frame
from cdb.bot_ws.screener import Screener
from cdb.localstack import LocalStack
from cdb.mexc_sim.config import SimConfig
from cdb.mexc_sim.simulator import Simulator, frame

ROOT = Path(__file__).resolve().parent.parent
REDIS_DB = "4"
SIM_PORT = 18210
WS_PORT = 18200


def scrape_metric(url: str, name: str) -> float:
    """The sum of a metric's samples in a Prometheus text page."""
    total = 0.0
    for line in httpx.get(url, timeout=5).text.splitlines():
        if line.split(" ")[0].split("{")[0] == name:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _pin(proc: subprocess.Popen[bytes], cpu: int) -> None:
    cpus = os.sched_getaffinity(0)
    if len(cpus) > 1:
        os.sched_setaffinity(proc.pid, {sorted(cpus)[cpu % len(cpus)]})


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, *args], env={**os.environ, **env}, stdout=out, stderr=out, cwd=ROOT
    )


def _wait_http(url: str, timeout: float = 120.0, status: str = "ok") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).json().get("status") == status:
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not {status} after {timeout}s")


def _stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def parse_and_aggregate() -> list[dict[str, Any]]:
    sim = Simulator(SimConfig(symbols=1000, seed=3, start_time=1_767_225_600, history_min=0))
    start = sim.market.start_ms
    texts: list[str] = []
    for second in range(1, 31):
        new = sim.market.advance_to(start + second * 1000)
        texts.extend(
            frame("push.deal", [d.wire() for d in deals], start + second * 1000, symbol)
            for symbol, deals in new.items()
        )
    sizes = {c.symbol: c.contract_size for c in sim.market.contracts}
    screener = Screener(sizes, 15)
    # connected at the first frame's second: the screener refuses a frame more than its
    # max_jump_ms past the connection's previous one, as it would a real exchange's
    screener.connected(sizes, start)
    for candles in screener.candles.values():
        candles.trusted_from = start // 1000  # as if the first minute were backfilled
    began = time.process_time()
    deals = 0
    for text in texts:
        deals += screener.on_frame(parse_frame(text))
    screener.close_due()
    screener.movers()
    cpu = time.process_time() - began
    return [
        {
            "name": "parse+aggregate deals/s (one core)",
            "value": deals / cpu,
            "unit": "deals/s",
            "note": f"{deals} deals in {len(texts)} frames, 1,000 symbols, CPU time",
        }
    ]


def end_to_end(stack: LocalStack, logs: Path) -> list[dict[str, Any]]:
    env = {**stack.env(), "REDIS_DB": REDIS_DB}
    sim = _start(
        [
            "-m",
            "cdb.mexc_sim",
            "--port",
            str(SIM_PORT),
            "--symbols",
            "1000",
            "--speed",
            "240",
            "--history-min",
            "20",
            "--kline-limit",
            "4000",
            "--push-interval",
            "0.05",  # rounds of 50 ms generation: the generator may use its whole core
        ],
        {},
        logs / "sim-e2e.log",
    )
    _pin(sim, 1)
    ws = None
    try:
        _wait_http(f"http://127.0.0.1:{SIM_PORT}/health")
        ws = _start(
            ["-m", "cdb.bot_ws"],
            {
                **env,
                "FRAME_CLOCK_MAX_RATE": "600",  # mexc_sim at up to 240x
                "FRAME_MAX_AHEAD_S": "7200",
                # a simulator that lags at 240x catches up in bursts whose frames span a
                # minute and more of its time (MEXC's own never do)
                "FRAME_MAX_JUMP_S": "600",
                "HTTP_PORT": str(WS_PORT),
                "HTTP_HOST": "127.0.0.1",
                "MEXC_WS_URL": f"ws://127.0.0.1:{SIM_PORT}/edge",
                "MEXC_REST_URL": f"http://127.0.0.1:{SIM_PORT}",
                "REST_RATE_PER_2S": "2000",
                "LOG_LEVEL": "WARNING",
            },
            logs / "bot_ws-e2e.log",
        )
        _pin(ws, 0)
        _wait_http(f"http://127.0.0.1:{WS_PORT}/health")
        time.sleep(10)
        metrics_url = f"http://127.0.0.1:{WS_PORT}/metrics"
        proc = psutil.Process(ws.pid)
        sim_proc = psutil.Process(sim.pid)
        ticks0 = scrape_metric(metrics_url, "bot_ws_ticks_total")
        cpu0, sim_cpu0, t0 = (
            sum(proc.cpu_times()[:2]),
            sum(sim_proc.cpu_times()[:2]),
            time.monotonic(),
        )
        time.sleep(20)
        ticks1 = scrape_metric(metrics_url, "bot_ws_ticks_total")
        cpu1, sim_cpu1, t1 = (
            sum(proc.cpu_times()[:2]),
            sum(sim_proc.cpu_times()[:2]),
            time.monotonic(),
        )
        rss = proc.memory_info().rss
        refused = scrape_metric(metrics_url, "bot_ws_frame_time_jumps_total")
        if refused:  # the deals of refused frames are not processed: the rate would lie
            raise RuntimeError(f"bot_ws refused {refused:.0f} frames of the simulator's feed")
        rate = (ticks1 - ticks0) / (t1 - t0)
        sim_share = (sim_cpu1 - sim_cpu0) / (t1 - t0)
        cpu_share = (cpu1 - cpu0) / (t1 - t0)
        return [
            {
                "name": "end-to-end deals/s processed",
                "value": rate,
                "unit": "deals/s",
                "note": f"1,000 symbols, 5 sockets; simulator CPU {sim_share:.0%} of a core;"
                " no frame refused",
            },
            {
                "name": "bot_ws CPU at that rate",
                "value": cpu_share * 100,
                "unit": "% of a core",
                "note": "incl. publishing candles and movers to Redis",
            },
            {
                "name": "bot_ws CPU per 1,000 deals/s",
                "value": cpu_share * 100 / (rate / 1000) if rate else 0.0,
                "unit": "% of a core",
                "note": "",
            },
            {
                "name": "bot_ws resident memory, 1,000 symbols",
                "value": rss / 2**20,
                "unit": "MiB",
                "note": "after 30 s at speed 240 (lookback 15)",
            },
        ]
    finally:
        _stop(*(p for p in (ws, sim) if p is not None))


def reconnect(stack: LocalStack, logs: Path) -> list[dict[str, Any]]:
    env = {**stack.env(), "REDIS_DB": REDIS_DB}
    redis = Redis(
        host="127.0.0.1", port=stack.redis_port, password=stack.redis.password, db=int(REDIS_DB)
    )
    redis.delete("cdb:candles")
    sim = _start(
        ["-m", "cdb.mexc_sim", "--port", str(SIM_PORT + 1), "--symbols", "40", "--speed", "60"],
        {},
        logs / "sim-reconnect.log",
    )
    ws = None
    sim_url = f"http://127.0.0.1:{SIM_PORT + 1}"
    try:
        _wait_http(f"{sim_url}/health")
        ws = _start(
            ["-m", "cdb.bot_ws"],
            {
                **env,
                "FRAME_CLOCK_MAX_RATE": "600",  # mexc_sim at up to 240x
                "FRAME_MAX_AHEAD_S": "7200",
                # a simulator that lags at 240x catches up in bursts whose frames span a
                # minute and more of its time (MEXC's own never do)
                "FRAME_MAX_JUMP_S": "600",
                "HTTP_PORT": str(WS_PORT + 1),
                "HTTP_HOST": "127.0.0.1",
                "MEXC_WS_URL": f"ws://127.0.0.1:{SIM_PORT + 1}/edge",
                "MEXC_REST_URL": sim_url,
                "LOG_LEVEL": "WARNING",
            },
            logs / "bot_ws-reconnect.log",
        )
        status_url = f"http://127.0.0.1:{WS_PORT + 1}/status"
        _wait_http(f"http://127.0.0.1:{WS_PORT + 1}/health")
        time.sleep(5)
        to_reconnect, to_candle, to_gap = [], [], []
        for _ in range(3):
            sessions = httpx.get(status_url).json()["chunks"][0]["sessions"]
            last_id = (redis.xrevrange("cdb:candles", count=1) or [(b"0-0", {})])[0][0]
            drop_minute = httpx.get(f"{sim_url}/sim/status").json()["exchange_ms"] // 60_000 * 60
            began = time.monotonic()
            httpx.post(f"{sim_url}/sim/drop")
            while httpx.get(status_url).json()["chunks"][0]["sessions"] == sessions:
                time.sleep(0.01)
            to_reconnect.append(time.monotonic() - began)
            first = None
            gap_symbols: set[str] = set()
            while len(gap_symbols) < 40 and time.monotonic() - began < 120:
                entries = redis.xrange("cdb:candles", min=f"({last_id.decode()}", count=1000)
                for entry_id, fields in entries:
                    last_id = entry_id
                    if first is None:
                        first = time.monotonic() - began
                    event = fields[b"event"].decode()
                    if f'"open_time":{drop_minute},' in event:
                        gap_symbols.add(event.split('"symbol":"')[1].split('"')[0])
                time.sleep(0.01)
            to_candle.append(first or float("nan"))
            to_gap.append(time.monotonic() - began)
            time.sleep(2)
        return [
            {
                "name": "drop → reconnected",
                "value": statistics.median(to_reconnect),
                "unit": "s",
                "note": "median of 3, jittered backoff from 0.2 s",
            },
            {
                "name": "drop → first candle published",
                "value": statistics.median(to_candle),
                "unit": "s",
                "note": "40 symbols, speed 60 (a minute per second)",
            },
            {
                "name": "drop → gap minute backfilled (all 40)",
                "value": statistics.median(to_gap),
                "unit": "s",
                "note": "REST klines after the minute closes, 20 req/2 s",
            },
        ]
    finally:
        _stop(*(p for p in (ws, sim) if p is not None))


def run(stack: LocalStack) -> list[dict[str, Any]]:
    logs = ROOT / ".cdb" / "bench" / "logs"
    return [*parse_and_aggregate(), *end_to_end(stack, logs), *reconnect(stack, logs)]
