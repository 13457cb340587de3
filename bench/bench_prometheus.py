"""The seed's Prometheus table, re-measured: HTTP latency, CPU and memory of a service
handling 200 events/s, without metrics and with the kernel's metrics scraped each second
(15 times the production scrape rate, so the overhead is not hidden by a quiet scraper)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import psutil

from cdb.localstack import LocalStack

REQUESTS = 2000


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def measure_mode(stack: LocalStack, with_metrics: bool) -> dict[str, float]:
    port = free_port()
    env = {**os.environ, **stack.env()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.metrics_probe", str(port), "on" if with_metrics else "off"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=5.0) as client:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if client.get(f"{url}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            time.sleep(2.0)  # warm-up: the event flow reaches a steady state
            process = psutil.Process(proc.pid)
            process.cpu_percent(None)
            stop = threading.Event()

            def scrape() -> None:
                with httpx.Client(timeout=5.0) as scraper:
                    while not stop.wait(1.0):
                        scraper.get(f"{url}/metrics")

            scraper = threading.Thread(target=scrape)
            if with_metrics:
                scraper.start()
            samples = []
            started = time.monotonic()
            for _ in range(REQUESTS):
                t0 = time.perf_counter()
                client.get(f"{url}/health")
                samples.append(time.perf_counter() - t0)
            stop.set()
            if with_metrics:
                scraper.join()
            elapsed = time.monotonic() - started
            cpu = process.cpu_percent(None)
            rss = process.memory_info().rss / 2**20
    finally:
        proc.terminate()
        proc.wait(10)
    samples.sort()
    return {
        "latency_ms": samples[len(samples) // 2] * 1e3,
        "cpu_pct": cpu,
        "rss_mb": rss,
        "seconds": elapsed,
    }


def run(stack: LocalStack) -> list[dict[str, Any]]:
    without = measure_mode(stack, with_metrics=False)
    with_metrics = measure_mode(stack, with_metrics=True)
    rows = []
    for key, label, unit in (
        ("latency_ms", "HTTP /health p50", "ms"),
        ("cpu_pct", "CPU (one process)", "%"),
        ("rss_mb", "resident memory", "MiB"),
    ):
        rows.append(
            {
                "name": f"{label} without metrics",
                "value": without[key],
                "unit": unit,
                "note": f"{REQUESTS} requests, 200 events/s",
            }
        )
        rows.append(
            {
                "name": f"{label} with metrics",
                "value": with_metrics[key],
                "unit": unit,
                "note": f"change {with_metrics[key] - without[key]:+.2f} {unit}",
            }
        )
    return rows
