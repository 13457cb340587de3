"""Equity and exposure over time as an SVG drawn on the server.

Why SVG from the server rather than plotly or a JavaScript chart library: the page stays
readable without JavaScript, nothing is loaded from elsewhere (the CSP allows only this
origin and no inline script), the live update is the same server-rendered fragment as the
rest of the page, and a few hundred points are a few kilobytes. The template draws it;
this module only scales the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Chart", "line_chart"]

WIDTH, HEIGHT, PAD = 600.0, 200.0, 4.0


@dataclass(frozen=True)
class Series:
    name: str
    css: str  # a class of console.css: no inline styles under the CSP
    points: str  # "x,y x,y …" in the viewBox
    first: float
    last: float
    low: float
    high: float


@dataclass(frozen=True)
class Chart:
    width: float
    height: float
    series: list[Series]
    start: datetime | None
    end: datetime | None


def _scale(values: list[float], times: list[float]) -> tuple[str, float, float]:
    low, high = min(values), max(values)
    span = (high - low) or max(abs(high) * 0.01, 1.0)
    t0, t1 = times[0], times[-1]
    width = (t1 - t0) or 1.0
    coords = []
    for t, v in zip(times, values, strict=True):
        x = PAD + (t - t0) / width * (WIDTH - 2 * PAD)
        y = HEIGHT - PAD - (v - low) / span * (HEIGHT - 2 * PAD)
        coords.append(f"{x:.1f},{y:.1f}")
    return " ".join(coords), low, high


def line_chart(rows: list[dict[str, Any]], columns: dict[str, tuple[str, str]]) -> Chart | None:
    """One line per ``column: (label, css class)``, each on its own scale (equity moves by
    tenths of a percent, exposure from zero to half of it). None without two points."""
    if len(rows) < 2:
        return None
    times = [row["recorded_at"].timestamp() for row in rows]
    series = []
    for column, (label, css) in columns.items():
        values = [float(row[column]) for row in rows]
        points, low, high = _scale(values, times)
        series.append(Series(label, css, points, values[0], values[-1], low, high))
    return Chart(WIDTH, HEIGHT, series, rows[0]["recorded_at"], rows[-1]["recorded_at"])
