"""``make bench``: every ``bench/bench_*.py`` module's ``run()``, a table and a JSON file.

A module's ``run(stack)`` gets a running :class:`cdb.localstack.LocalStack` and returns a
list of rows ``{"name": …, "value": …, "unit": …, "note": …}``. Figures are measured,
never asserted: the test suite has no timing thresholds.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cdb.localstack import LocalStack

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("only", nargs="*", help="bench module names (default: all)")
    parser.add_argument("--data-dir", type=Path, default=HERE.parent / ".cdb" / "bench")
    args = parser.parse_args()
    names = args.only or sorted(p.stem for p in HERE.glob("bench_*.py"))
    stack = LocalStack(args.data_dir, redis_port=16479, postgres_port=15532)
    stack.start()
    console = Console()
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": __import__("os").cpu_count(),
        },
        "benchmarks": {},
    }
    table = Table(title="cdb benchmarks")
    for column in ("benchmark", "figure", "value", "unit", "note"):
        table.add_column(column)
    try:
        for name in names:
            module = importlib.import_module(f"bench.{name}")
            console.print(f"running {name} …")
            rows = module.run(stack)
            results["benchmarks"][name] = rows
            for row in rows:
                value = row["value"]
                shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
                table.add_row(name, row["name"], shown, row.get("unit", ""), row.get("note", ""))
    finally:
        stack.stop()
    console.print(table)
    out = HERE / "results" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    (HERE / "results" / "latest.json").write_text(json.dumps(results, indent=2))
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
