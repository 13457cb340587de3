"""Demo start-up: from nothing running to every service healthy, and to the first signal.

The services are started by the demo's own supervisor in the seed's order, against the
bench's Redis and PostgreSQL (already running, so the figures are the services' own).
Each start begins from an empty database and an empty Redis database, as a first
``make demo`` does: the books, streams and consumer groups of an earlier start (or an
earlier ``make bench``) would otherwise make the next start slower to its first signal
(exposure used up, old entries re-read) with every run.
"""

from __future__ import annotations

import asyncio
import io
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console

from cdb.demo.plan import DEFAULT_PORTS, PYTHON_SERVICES, DemoOptions
from cdb.demo.run import Demo
from cdb.localstack import LocalStack

ROUNDS = 2


def free_offset() -> int:
    """A port offset whose demo ports (8000…8010 + offset) are all free."""
    for offset in range(31_000, 50_000, 101):
        taken = False
        for port in range(8000 + offset, 8011 + offset):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    taken = True
                    break
        if not taken:
            return offset
    raise RuntimeError("no free port block for the demo")


# Not deployed by the chart as a Python service: the demo's own exchange and the
# monitoring binaries.
NOT_DEPLOYABLE = frozenset(DEFAULT_PORTS) - frozenset(PYTHON_SERVICES)


def pss_by_service(demo: Demo) -> dict[str, float]:
    """Each running child's PSS in MiB (its own process and any children of it)."""
    assert demo.supervisor is not None
    sizes: dict[str, float] = {}
    for child in demo.supervisor.children:
        if child.process is None or child.process.returncode is not None:
            continue
        try:
            top = psutil.Process(child.process.pid)
            procs = [top, *top.children(recursive=True)]
            sizes[child.name] = sum(p.memory_full_info().pss for p in procs) / 2**20
        except psutil.Error:
            continue
    return sizes


def empty_stores(stack: LocalStack) -> None:
    """The demo's database dropped and made again (empty: the supervisor migrates it),
    its Redis database flushed."""
    env = stack.env()
    stack.postgres.create_database(env["POSTGRES_DB"])
    import redis

    redis.Redis(port=stack.redis_port, password=env["REDIS_PASSWORD"]).flushdb()


async def one_start(
    stack: LocalStack,
) -> tuple[float, float | None, int, dict[str, float]]:
    empty_stores(stack)
    options = DemoOptions(
        port_offset=free_offset(),
        redis_port=stack.redis_port,
        postgres_port=stack.postgres_port,
    )
    demo = Demo(options, stack.data_dir, Console(file=io.StringIO()))
    stop = asyncio.Event()
    began = time.monotonic()
    try:
        await demo.up(stop)
        healthy = time.monotonic() - began
        first = await asyncio.wait_for(demo.wait_first_signal(stop), 120)
        assert demo.supervisor is not None
        return healthy, first, len(demo.supervisor.children), pss_by_service(demo)
    finally:
        stop.set()
        if demo.supervisor is not None:  # the stack belongs to the bench runner
            await demo.supervisor.stop_all()


def run(stack: LocalStack) -> list[dict[str, Any]]:
    healthy: list[float] = []
    first: list[float] = []
    services = 0
    pss: list[dict[str, float]] = []
    for _ in range(ROUNDS):
        up, signal, services, sizes = asyncio.run(one_start(stack))
        pss.append(sizes)
        healthy.append(up)
        if signal is not None:
            first.append(signal)
    logs = Path(stack.data_dir) / "logs"
    rows: list[dict[str, Any]] = [
        {
            "name": "demo start-up to every service healthy",
            "value": min(healthy),
            "unit": "s",
            "note": f"{services} services in the seed's order, best of {ROUNDS}; logs {logs}",
        }
    ]
    if first:
        rows.append(
            {
                "name": "demo start-up to first signal",
                "value": min(first),
                "unit": "s",
                "note": f"mexc_sim pump scenario at speed 20, best of {len(first)}",
            }
        )
    else:
        rows.append(
            {
                "name": "demo start-up to first signal",
                "value": float("nan"),
                "unit": "s",
                "note": "no signal within 120 s",
            }
        )
    rows.extend(pss_rows(pss))
    return rows


def pss_rows(rounds: list[dict[str, float]]) -> list[dict[str, Any]]:
    """PSS once the first signal is through: per service and the deployable ones summed,
    next to issue 17's target (450 MiB)."""
    rows: list[dict[str, Any]] = []
    names = sorted({name for sizes in rounds for name in sizes})
    for name in names:
        values = [sizes[name] for sizes in rounds if name in sizes]
        rows.append(
            {
                "name": f"{name} PSS in the running demo",
                "value": min(values),
                "unit": "MiB",
                "note": f"median {statistics.median(values):.1f} of {len(values)} starts",
            }
        )
    totals = [
        sum(v for k, v in sizes.items() if k not in NOT_DEPLOYABLE) for sizes in rounds if sizes
    ]
    if totals:
        best = min(totals)
        rows.append(
            {
                "name": "deployable services' PSS in the running demo, summed",
                "value": best,
                "unit": "MiB",
                "goal": "3",
                "target": 450,
                "better": "lower",
                "note": f"target 450 MiB, ratio {best / 450:.2f}; median "
                f"{statistics.median(totals):.1f} of {len(totals)} starts "
                f"(without {', '.join(sorted(NOT_DEPLOYABLE))})",
            }
        )
    return rows
