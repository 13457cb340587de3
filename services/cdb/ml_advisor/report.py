"""The evaluation as people read it: a rich table, an HTML report with plots, and a PNG.

The PNG is rendered by kaleido 1.x, which drives a headless Chrome/Chromium: it finds
``chromium`` on PATH or the binary named by ``BROWSER_PATH`` (scripts/setup.d/40-chromium.sh
installs Debian's ``chromium``).
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots
from rich.table import Table

from cdb.ml_advisor.evaluation import EvaluationResult

__all__ = ["ReportError", "evaluation_figure", "evaluation_table", "write_html", "write_png"]

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class ReportError(Exception):
    """The report could not be written (for a PNG: no browser for kaleido)."""


def _when(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def evaluation_table(result: EvaluationResult) -> Table:
    config = result.config
    table = Table(
        title=(
            f"rule vs model {result.model_version}: {result.symbols} symbols, "
            f"{result.bars:,} bars, {_when(result.start)} .. {_when(result.end)} UTC"
        ),
        caption=(
            f"hit = price moved the signal's way after {config.horizon_min} min; PnL on "
            f"{config.notional_usdt:,.0f} USDT per signal after {config.fee_pct:g}% fee per side; "
            f"model gate {config.threshold:g}; cooldown {config.cooldown_min} min"
            + (
                f"; WARNING: {result.training_overlap_bars:,} bars inside the training period"
                if result.training_overlap_bars
                else "; out of sample"
            )
        ),
    )
    for column in (
        "strategy",
        "signals",
        "hits",
        "hit rate @15m",
        "avg return",
        "PnL after fees (USDT)",
        "fees (USDT)",
        "max drawdown (USDT)",
        "also signalled by the other",
    ):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for row in result.summaries:
        table.add_row(
            row.strategy,
            str(row.signals),
            str(row.hits),
            _pct(row.hit_rate),
            "-" if row.avg_return_pct is None else f"{row.avg_return_pct:+.3f}%",
            f"{row.pnl_usdt:+,.2f}",
            f"{row.fees_usdt:,.2f}",
            f"{row.max_drawdown_usdt:,.2f}",
            str(row.shared),
        )
    return table


def evaluation_figure(result: EvaluationResult) -> go.Figure:
    trades = result.trades
    figure = make_subplots(
        rows=2,
        cols=2,
        subplot_titles=(
            "cumulative paper PnL after fees (USDT)",
            f"hit rate at {result.config.horizon_min} min",
            f"{result.config.horizon_min}-minute return per signal (%)",
            "signals per strategy",
        ),
        vertical_spacing=0.14,
    )
    colours = {result.rule_name: "#1f77b4", "model": "#d62728"}
    for row in result.summaries:
        mine = trades[trades["strategy"] == row.strategy]
        moments = [datetime.fromtimestamp(int(t), UTC) for t in mine["time"]]
        colour = colours.get(row.strategy, "#2ca02c")
        figure.add_trace(
            go.Scatter(
                x=moments,
                y=mine["pnl_usdt"].cumsum(),
                mode="lines",
                name=row.strategy,
                line={"color": colour},
            ),
            row=1,
            col=1,
        )
        figure.add_trace(
            go.Bar(
                x=[row.strategy],
                y=[(row.hit_rate or 0.0) * 100],
                marker_color=colour,
                showlegend=False,
            ),
            row=1,
            col=2,
        )
        figure.add_trace(
            go.Box(y=mine["return_pct"], name=row.strategy, marker_color=colour, showlegend=False),
            row=2,
            col=1,
        )
        figure.add_trace(
            go.Bar(x=[row.strategy], y=[row.signals], marker_color=colour, showlegend=False),
            row=2,
            col=2,
        )
    figure.update_layout(
        title=f"cdb ML advisor evaluation: {result.rule_name} vs model {result.model_version}",
        height=800,
        width=1200,
        template="plotly_white",
    )
    return figure


def write_html(figure: go.Figure, table_text: str, path: Path) -> Path:
    """A self-contained HTML file (plotly.js inlined: no network needed to open it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = figure.to_html(full_html=False, include_plotlyjs=True)
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<title>cdb ML advisor evaluation</title></head><body>"
        f"<pre>{_escape(table_text)}</pre>{body}</body></html>"
    )
    return path


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def browser_path() -> str | None:
    configured = os.environ.get("BROWSER_PATH")
    if configured:
        return configured if Path(configured).is_file() else None
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def write_png(figure: go.Figure, path: Path) -> Path:
    """Render the figure with kaleido; a clear error when no Chrome/Chromium is found."""
    browser = browser_path()
    if browser is None:
        raise ReportError(
            "PNG export needs Chrome/Chromium for kaleido: run scripts/setup.sh "
            "(installs Debian's chromium) or set BROWSER_PATH; or pass --no-png"
        )
    os.environ.setdefault("BROWSER_PATH", browser)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.write_image(str(path), format="png", width=1200, height=800)
    except Exception as error:
        raise ReportError(f"PNG export failed ({browser}): {error}") from None
    return path
