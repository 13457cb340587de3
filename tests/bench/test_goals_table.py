"""``make bench``'s goals table: each goal's figure next to its target, the ratio, met."""

from __future__ import annotations

from bench.__main__ import goals_table
from rich.console import Console


def rendered(benchmarks: dict[str, list[dict[str, object]]]) -> str:
    console = Console(width=200, record=True)
    console.print(goals_table(benchmarks))
    return console.export_text()


def test_lower_and_higher_targets_say_whether_they_are_met() -> None:
    text = rendered(
        {
            "bench_pipeline": [
                {
                    "name": "p99 ratio",
                    "value": 3.0,
                    "unit": "x",
                    "goal": "1",
                    "target": 1.5,
                    "better": "lower",
                    "load": "1.00",
                },
                {
                    "name": "sustained",
                    "value": 600,
                    "unit": "1/s",
                    "goal": "1",
                    "target": 500,
                    "better": "higher",
                },
                {"name": "not a goal", "value": 1.0, "unit": "ms"},
            ],
            "bench_prometheus": [{"name": "cpu on - off", "value": 2.5, "unit": "us", "goal": "4"}],
        }
    )
    rows = {
        cells[1]: cells
        for line in text.splitlines()
        if len(cells := [c.strip() for c in line.split("│")[1:-1]]) == 7
    }
    # goal, figure, value, target, ratio, met, load
    assert rows["p99 ratio"][3:6] == ["1.5 x", "2.00", "no"]
    assert rows["sustained"][3:6] == ["500 1/s", "1.20", "yes"]
    assert "not a goal" not in rows
    assert rows["cpu on - off"][2:6] == ["2.5 us", "-", "-", "-"]
