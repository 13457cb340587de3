"""Write the report: one self-contained HTML file (plotly.js inlined, works offline) and a
PNG of every chart (kaleido 1.x driving a headless Chromium).
"""

from __future__ import annotations

import asyncio
import html
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import plotly.graph_objects as go
from pydantic import BaseModel, ConfigDict

from cdb.report.books import Books
from cdb.report.figures import FIGURES

__all__ = ["PngExportError", "Report", "ReportStats", "find_browser", "write_report"]

PNG_SIZE = {"width": 1100, "height": 520}


class PngExportError(RuntimeError):
    """No browser for kaleido, or a chart failed to render."""


class ReportStats(BaseModel):
    model_config = ConfigDict(frozen=True)

    signals: int
    ml_signals: int
    orders: int
    filled_orders: int
    fills: int
    closed_positions: int
    open_positions: int
    wins: int
    realized_pnl: float
    fees: float
    start_equity: float | None
    end_equity: float | None
    max_drawdown_pct: float
    risk_events: int

    @classmethod
    def of(cls, books: Books) -> ReportStats:
        closed = [p for p in books.positions if p.status == "closed"]
        peak = 0.0
        drawdown = 0.0
        for point in books.equity:
            peak = max(peak, point.equity)
            if peak > 0:
                drawdown = max(drawdown, (peak - point.equity) / peak * 100)
        return cls(
            signals=len(books.signals),
            ml_signals=len(books.ml_signals),
            orders=len(books.orders),
            filled_orders=sum(1 for o in books.orders if o.status == "filled"),
            fills=len(books.fills),
            closed_positions=len(closed),
            open_positions=sum(1 for p in books.positions if p.status == "open"),
            wins=sum(1 for p in closed if p.realized_pnl > 0),
            realized_pnl=sum(f.realized_pnl for f in books.fills),
            fees=sum(f.fee for f in books.fills),
            start_equity=books.equity[0].equity if books.equity else None,
            end_equity=books.equity[-1].equity if books.equity else None,
            max_drawdown_pct=drawdown,
            risk_events=len(books.risk_events),
        )


class Report(BaseModel):
    """What was written, for the command line and the tests."""

    model_config = ConfigDict(frozen=True)

    html: Path
    pngs: list[Path]
    stats: ReportStats


def find_browser() -> str | None:
    """``BROWSER_PATH`` if set, else a Chromium or Chrome on ``PATH``."""
    configured = os.environ.get("BROWSER_PATH")
    if configured:
        return configured if Path(configured).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _stats_table(stats: ReportStats) -> str:
    def money(value: float | None) -> str:
        return "-" if value is None else f"{value:,.2f}"

    rows = [
        ("signals", f"{stats.signals:,}"),
        ("ML shadow signals", f"{stats.ml_signals:,}"),
        ("orders (filled)", f"{stats.orders:,} ({stats.filled_orders:,})"),
        ("fills", f"{stats.fills:,}"),
        ("positions closed / open", f"{stats.closed_positions:,} / {stats.open_positions:,}"),
        ("winning trades", f"{stats.wins:,}"),
        ("realized PnL (USDT)", money(stats.realized_pnl)),
        ("fees (USDT)", money(stats.fees)),
        ("equity start → end", f"{money(stats.start_equity)} → {money(stats.end_equity)}"),
        ("max drawdown", f"{stats.max_drawdown_pct:.2f} %"),
        ("risk events", f"{stats.risk_events:,}"),
    ]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table class='stats'>{body}</table>"


def _trades_table(books: Books, limit: int = 200) -> str:
    closed = [p for p in books.positions if p.status == "closed"][-limit:]
    if not closed:
        return "<p>No closed trades.</p>"
    head = "<tr><th>closed</th><th>symbol</th><th>side</th><th>qty</th><th>entry</th>"
    head += "<th>exit</th><th>PnL</th></tr>"
    rows = []
    for p in reversed(closed):
        when = p.closed_at.strftime("%Y-%m-%d %H:%M:%S") if p.closed_at else ""
        exit_price = f"{p.exit_price:g}" if p.exit_price is not None else ""
        rows.append(
            f"<tr><td>{when}</td><td>{html.escape(p.symbol)}</td><td>{p.side}</td>"
            f"<td>{p.quantity:g}</td><td>{p.entry_price:g}</td><td>{exit_price}</td>"
            f"<td>{p.realized_pnl:+.2f}</td></tr>"
        )
    return f"<table class='trades'>{head}{''.join(rows)}</table>"


def _html(title: str, books: Books, stats: ReportStats, figures: dict[str, go.Figure]) -> str:
    charts = []
    for index, (name, figure) in enumerate(figures.items()):
        charts.append(
            figure.to_html(
                full_html=False,
                include_plotlyjs=index == 0,  # inlined once: the file works offline
                div_id=f"chart-{name}",
            )
        )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: left; }}
td {{ font-variant-numeric: tabular-nums; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Source: {html.escape(books.source)} · generated {generated}</p>
{_stats_table(stats)}
{"".join(charts)}
<h2>Closed trades</h2>
{_trades_table(books)}
</body></html>
"""


async def write_pngs(figures: dict[str, go.Figure], directory: Path) -> list[Path]:
    """One PNG per chart, all rendered by one headless browser."""
    import kaleido

    browser = find_browser()
    if browser is None:
        raise PngExportError(
            "PNG export needs Chrome or Chromium (kaleido 1.x): install it with "
            "scripts/setup.sh (apt-get install chromium) or set BROWSER_PATH"
        )
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    paths = [directory / f"{name}.png" for name in figures]
    jobs = [
        {"fig": figure, "path": str(path), "opts": {"format": "png", **PNG_SIZE}}
        for figure, path in zip(figures.values(), paths, strict=True)
    ]
    try:
        async with kaleido.Kaleido(path=browser, mathjax=False) as renderer:
            await renderer.write_fig_from_object(jobs, cancel_on_error=True)
    except Exception as error:
        raise PngExportError(f"PNG export failed ({browser}): {error}") from error
    missing = [str(p) for p in paths if not p.exists() or p.stat().st_size == 0]
    if missing:
        raise PngExportError(f"PNG export wrote nothing for: {', '.join(missing)}")
    return paths


async def write_report(
    books: Books, out_dir: Path, *, title: str = "cdb report", png: bool = True
) -> Report:
    """``out_dir/report.html`` and ``out_dir/png/<chart>.png``; returns what it wrote."""
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    stats = ReportStats.of(books)
    figures = {name: build(books) for name, build in FIGURES.items()}
    page = out_dir / "report.html"
    page.write_text(_html(title, books, stats, figures), encoding="utf-8")
    pngs = await write_pngs(figures, out_dir / "png") if png else []
    return Report(html=page, pngs=pngs, stats=stats)
