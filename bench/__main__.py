"""``make bench``: every ``bench/bench_*.py`` module's ``run()``, a table and a JSON file.

A module's ``run(stack)`` gets a running :class:`cdb.localstack.LocalStack` and returns a
list of rows ``{"name": …, "value": …, "unit": …, "note": …}``. Figures are measured,
never asserted: the test suite has no timing thresholds. Every row gets the load average
at its module's end; the JSON is rewritten after each module, and a module that fails
leaves an error row (and exit status 1) without losing the others' figures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
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
            "cpus": os.cpu_count(),
        },
        "benchmarks": {},
    }
    table = Table(title="cdb benchmarks")
    for column in ("benchmark", "figure", "value", "unit", "note", "load"):
        table.add_column(column)
    out = HERE / "results" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    failed: list[str] = []
    try:
        for name in names:
            console.print(f"running {name} …")
            rows = run_module(name, stack)
            if any(row.get("error") for row in rows):
                failed.append(name)
            results["benchmarks"][name] = rows
            for row in rows:
                value = row["value"]
                shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
                table.add_row(name, row["name"], shown, row.get("unit", ""), row.get("note", ""),
                              row.get("load", ""))  # fmt: skip
            save(results, out)  # each module's rows on disk as soon as it finished
    finally:
        stack.stop()
    console.print(table)
    console.print(f"wrote {out}")
    if failed:
        console.print(f"[red]failed: {', '.join(failed)}[/red] (the others' figures are kept)")
        return 1
    return 0


def run_module(name: str, stack: LocalStack) -> list[dict[str, Any]]:
    """One module's rows, each with the load average at its end; a module that fails
    gives one error row instead of taking the finished modules' figures with it."""
    try:
        rows: list[dict[str, Any]] = importlib.import_module(f"bench.{name}").run(stack)
    except Exception as error:  # any failure: reported in the table and the JSON
        traceback.print_exc()
        rows = [{"name": "error", "value": "-", "unit": "",
                 "note": f"{type(error).__name__}: {error}"[:300], "error": True}]  # fmt: skip
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    for row in rows:
        row.setdefault("load", load)
    return rows


def save(results: dict[str, Any], out: Path) -> None:
    text = json.dumps(results, indent=2)
    out.write_text(text)
    (HERE / "results" / "latest.json").write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
