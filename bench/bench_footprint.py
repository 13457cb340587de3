"""What each deployable service costs before it does anything: import time, modules, memory.

Each figure is a fresh ``python`` with the flags the service runs with (``-OO`` but for
ml_advisor: :func:`cdb.demo.plan.interpreter`) that imports the service's ``__main__``
module (all it imports at module level; nothing runs), then reports the seconds the import
took, how many modules it loaded, and its RSS and PSS; for the services run with ``-OO``
also their PSS without it, and the sum both ways. Three cold processes per service; min
and median. The running demo's PSS per service is in ``bench_demo``; together they show how
much of a service's memory is imports (issue 17, goal 3: deployable services under
450 MiB PSS together).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from typing import Any

from cdb.demo.plan import OPTIMIZED, PYTHON_SERVICES, interpreter
from cdb.localstack import LocalStack

# Everything the chart deploys as a Python service (the demo supervisor and mexc_sim are not).
SERVICES = PYTHON_SERVICES
REPEATS = 3

PROBE = """
import importlib, json, sys, time
import psutil
began = time.perf_counter()
importlib.import_module(sys.argv[1])
took = time.perf_counter() - began
info = psutil.Process().memory_full_info()
print(json.dumps({"import_s": took, "modules": len(sys.modules),
                  "rss_mib": info.rss / 2**20, "pss_mib": info.pss / 2**20}))
"""


def probe(service: str, python: list[str]) -> dict[str, float]:
    done = subprocess.run(
        [*python, "-c", PROBE, f"cdb.{service}.__main__"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"importing cdb.{service} failed: {done.stderr.strip()[-300:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def installed(service: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(f"cdb.{service}") is not None


def run(stack: LocalStack) -> list[dict[str, Any]]:
    del stack  # imports only: no Redis or PostgreSQL needed
    rows: list[dict[str, Any]] = []
    pss_total = plain_total = 0.0
    for service in SERVICES:
        if not installed(service):
            continue
        runs = [probe(service, interpreter(service)) for _ in range(REPEATS)]
        for key, unit, what in (
            ("import_s", "s", "import time"),
            ("rss_mib", "MiB", "RSS after imports"),
            ("pss_mib", "MiB", "PSS after imports"),
        ):
            values = [r[key] for r in runs]
            rows.append(
                {
                    "name": f"{service} {what}",
                    "value": min(values),
                    "unit": unit,
                    "note": f"median {statistics.median(values):.3f} of {REPEATS} cold "
                    f"processes; {int(runs[0]['modules'])} modules loaded",
                }
            )
        pss_total += min(r["pss_mib"] for r in runs)
        plain = runs
        if service in OPTIMIZED:
            plain = [probe(service, [sys.executable]) for _ in range(REPEATS)]
            values = [r["pss_mib"] for r in plain]
            rows.append(
                {
                    "name": f"{service} PSS after imports without -OO",
                    "value": min(values),
                    "unit": "MiB",
                    "note": f"median {statistics.median(values):.3f} of {REPEATS} cold processes",
                }
            )
        plain_total += min(r["pss_mib"] for r in plain)
    rows.append(
        {
            "name": "deployable services' PSS after imports, summed",
            "value": pss_total,
            "unit": "MiB",
            "note": "each measured alone (nothing shared between them), with the flags "
            f"it runs with; {plain_total:.1f} MiB all without -OO; "
            "the running demo's figure is in bench_demo",
        }
    )
    return rows
