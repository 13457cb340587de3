"""Prometheus overhead as the events see it: the same service process with the kernel's
metrics on and off, in alternating runs.

``bench.metrics_probe`` is one process with the kernel's HTTP face, bus and consumer,
handling 200 ``market_data`` events/s it publishes itself (real Redis). With metrics on,
the bus and consumer record the kernel's counters and handler histogram, and this module
scrapes ``/metrics`` every second (15 times the production scrape rate, so the cost of
rendering is not hidden by a quiet scraper); off is the same code with ``metrics=None``
and no scraper. Per run, after a warm-up: each event's latency from publish to its
handler (p50, p99), and the process's CPU time per event over the window. Off and on
alternate, so both see the same neighbours; each figure is the median (and min) of the
runs, with the load average.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx

from cdb.localstack import LocalStack

EVENTS = 2000  # measured per run (10 s at 200/s)
ROUNDS = 5  # runs per mode, alternating off, on, off, on, ...


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure_mode(stack: LocalStack, with_metrics: bool, out: Path) -> dict[str, float]:
    port = free_port()
    env = {**os.environ, **stack.env()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.metrics_probe", str(port), "on" if with_metrics else "off",
         str(EVENTS), str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    scrapes = 0

    def scrape() -> None:
        nonlocal scrapes
        with httpx.Client(timeout=5.0) as scraper:
            while not stop.wait(1.0):
                try:
                    scraper.get(f"{url}/metrics")
                    scrapes += 1
                except httpx.HTTPError:
                    pass  # not up yet, or gone: the probe's own figures tell

    scraper = threading.Thread(target=scrape)
    if with_metrics:
        scraper.start()
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        stop.set()
        if with_metrics:
            scraper.join()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"metrics probe failed ({proc.returncode}): {err.strip()[-300:]}")
    figures = json.loads(out.read_text())
    latencies = figures["latencies_s"]
    return {
        "p50_ms": percentile(latencies, 0.50) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "cpu_us_per_event": figures["cpu_s"] / len(latencies) * 1e6,
        "cpu_pct": 100.0 * figures["cpu_s"] / figures["wall_s"],
        "scrapes": float(scrapes),
    }


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(stack: LocalStack) -> list[dict[str, Any]]:
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    loads: dict[bool, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(ROUNDS):
            for mode in (False, True):
                out = Path(tmp) / f"probe-{round_}-{int(mode)}.json"
                runs[mode].append(measure_mode(stack, mode, out))
                loads[mode] = load()
    rows: list[dict[str, Any]] = []

    def median(mode: bool, key: str) -> float:
        return statistics.median(r[key] for r in runs[mode])

    def low(mode: bool, key: str) -> float:
        return min(r[key] for r in runs[mode])

    for key, label, unit in (
        ("p50_ms", "event latency p50 (publish to handler)", "ms"),
        ("p99_ms", "event latency p99 (publish to handler)", "ms"),
        ("cpu_us_per_event", "CPU per event (whole process)", "us"),
    ):
        for mode in (False, True):
            rows.append(
                {
                    "name": f"{label}, metrics {'on' if mode else 'off'}",
                    "value": median(mode, key),
                    "unit": unit,
                    "note": f"median of {ROUNDS} runs, min {low(mode, key):.3f} {unit}; "
                    f"{EVENTS} events per run at 200/s"
                    + (
                        f", /metrics scraped every 1 s ({median(mode, 'scrapes'):.0f}/run)"
                        if mode
                        else "; no scraper"
                    ),
                    "load": loads[mode],
                }
            )
        off, on = median(False, key), median(True, key)
        rows.append(
            {
                "name": f"{label}: on - off",
                "value": on - off,
                "unit": unit,
                "goal": "4",  # measured, no target
                "note": f"{(on - off) / off * 100.0:+.1f} % (medians; runs alternated)",
                "load": loads[True],
            }
        )
    return rows
