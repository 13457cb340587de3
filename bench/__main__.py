"""``make bench``: every ``bench/bench_*.py`` module's ``run()``, a table and a JSON file.

A module's ``run(stack)`` gets a running :class:`cdb.localstack.LocalStack` and returns a
list of rows ``{"name": …, "value": …, "unit": …, "note": …}``. Figures are measured,
never asserted: the test suite has no timing thresholds. Every row gets the load average
at its module's end; the JSON is rewritten after each module, and a module that fails
leaves an error row (and exit status 1) without losing the others' figures. Rows that
name a ``goal`` (issue 17's) are shown once more at the end, next to their target, with
the ratio.
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
    # two benches side by side (two worktrees) need their own stack: other ports, other dir
    parser.add_argument("--redis-port", type=int, default=16479)
    parser.add_argument("--postgres-port", type=int, default=15532)
    args = parser.parse_args()
    names = args.only or sorted(p.stem for p in HERE.glob("bench_*.py"))
    stack = LocalStack(args.data_dir, redis_port=args.redis_port, postgres_port=args.postgres_port)
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
    console.print(goals_table(results["benchmarks"]))
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


def goals_table(benchmarks: dict[str, list[dict[str, Any]]]) -> Table:
    """Issue 17's goals in one place: every row that names a ``goal`` (with its
    ``target`` and ``better``: "lower" or "higher"), its figure next to the target, the
    ratio and whether it is met. A goal without a target (a figure to measure) shows
    the figure alone."""
    table = Table(title="goals (issue 17): figure, target, ratio")
    for column in ("goal", "figure", "value", "target", "ratio", "met", "load"):
        table.add_column(column)
    rows = [row for rows in benchmarks.values() for row in rows if row.get("goal")]
    for row in sorted(rows, key=lambda r: str(r["goal"])):
        value, unit = row["value"], row.get("unit", "")
        target = row.get("target")
        if target is None or not isinstance(value, int | float):
            table.add_row(str(row["goal"]), row["name"], f"{value} {unit}", "-", "-", "-",
                          row.get("load", ""))  # fmt: skip
            continue
        ratio = value / target
        met = value <= target if row.get("better") == "lower" else value >= target
        table.add_row(str(row["goal"]), row["name"], f"{value:,.2f} {unit}",
                      f"{target:g} {unit}", f"{ratio:.2f}", "yes" if met else "no",
                      row.get("load", ""))  # fmt: skip
    return table


def save(results: dict[str, Any], out: Path) -> None:
    text = json.dumps(results, indent=2)
    out.write_text(text)
    (HERE / "results" / "latest.json").write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
