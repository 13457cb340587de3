"""The report's charts, one function each, from :class:`Books` to a plotly figure."""

from __future__ import annotations

from collections import Counter

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cdb.report.books import Books

__all__ = ["FIGURES", "equity_figure", "risk_figure", "signals_figure", "trades_figure"]

LAYOUT = {"template": "plotly_white", "margin": {"l": 60, "r": 30, "t": 60, "b": 50}}


def _empty(fig: go.Figure, what: str) -> go.Figure:
    fig.add_annotation(text=f"no {what} yet", showarrow=False, font={"size": 16})
    return fig


def equity_figure(books: Books) -> go.Figure:
    """Equity and exposure over time (USDT)."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.update_layout(title="Equity curve (USDT)", **LAYOUT)
    if not books.equity:
        return _empty(fig, "equity records")
    times = [point.recorded_at for point in books.equity]
    fig.add_trace(
        go.Scatter(
            x=times,
            y=[p.equity for p in books.equity],
            name="equity",
            mode="lines",
            line_shape="hv",
        ),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(
            x=times,
            y=[p.exposure for p in books.equity],
            name="exposure",
            mode="lines",
            line={"dash": "dot", "shape": "hv"},
        ),
        secondary_y=True,
    )
    fig.update_yaxes(title_text="equity", secondary_y=False)
    fig.update_yaxes(title_text="exposure", secondary_y=True)
    return fig


def trades_figure(books: Books) -> go.Figure:
    """Every closed trade's realized PnL (USDT) at its close time, by side."""
    fig = go.Figure()
    fig.update_layout(
        title="Trades: realized PnL per closed trade (USDT)",
        xaxis_title="closed",
        yaxis_title="PnL",
        **LAYOUT,
    )
    closed = [p for p in books.positions if p.status == "closed" and p.closed_at is not None]
    if not closed:
        return _empty(fig, "closed trades")
    for side, colour in (("long", "#2a9d8f"), ("short", "#e76f51")):
        trades = [p for p in closed if p.side == side]
        if not trades:
            continue
        fig.add_trace(
            go.Bar(
                x=[p.closed_at for p in trades],
                y=[p.realized_pnl for p in trades],
                name=side,
                marker_color=colour,
                text=[p.symbol for p in trades],
                hovertemplate="%{text}<br>%{x}<br>%{y:+.2f} USDT<extra></extra>",
            )
        )
    return fig


def signals_figure(books: Books) -> go.Figure:
    """Signals per symbol, split by side."""
    fig = go.Figure()
    fig.update_layout(title="Signals per symbol", barmode="stack", yaxis_title="signals", **LAYOUT)
    if not books.signals:
        return _empty(fig, "signals")
    by_side = {side: Counter[str]() for side in ("long", "short")}
    for signal in books.signals:
        by_side[signal.side][signal.symbol] += 1
    symbols = sorted({signal.symbol for signal in books.signals})
    for side, counts in by_side.items():
        if counts:
            fig.add_trace(go.Bar(x=symbols, y=[counts[s] for s in symbols], name=side))
    return fig


def risk_figure(books: Books) -> go.Figure:
    """Risk events (rejections, circuit breaker, …) by kind."""
    fig = go.Figure()
    fig.update_layout(title="Risk events by kind", yaxis_title="events", **LAYOUT)
    if not books.risk_events:
        return _empty(fig, "risk events")
    counts = Counter(event.kind for event in books.risk_events)
    kinds = sorted(counts)
    fig.add_trace(go.Bar(x=kinds, y=[counts[k] for k in kinds], name="risk events"))
    return fig


FIGURES = {
    "equity": equity_figure,
    "trades": trades_figure,
    "signals": signals_figure,
    "risk_events": risk_figure,
}
