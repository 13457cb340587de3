"""The live terminal view (textual): movers, signals, orders and fills, positions with PnL,
equity and exposure, the circuit breaker, and each service's health and rate.
"""

from __future__ import annotations

from datetime import datetime

from rich.markup import escape
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.widgets import DataTable, Footer, Header, Static

from cdb.view.source import DashboardSource, Snapshot

__all__ = ["DashboardApp", "render_account"]

PANELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "gainers": ("Top 5 gainers (15m)", ("symbol", "price", "change", "volume")),
    "losers": ("Top 5 losers (15m)", ("symbol", "price", "change", "volume")),
    "services": ("Services", ("service", "health", "rate")),
    "signals": ("Latest signals", ("time", "symbol", "side", "conf", "change", "price")),
    "orders": ("Orders", ("time", "symbol", "side", "qty", "notional", "status")),
    "fills": ("Fills", ("time", "symbol", "kind", "price", "qty", "fee", "pnl")),
    "positions": ("Open positions", ("symbol", "side", "qty", "entry", "mark", "uPnL")),
    "ml_signals": ("ML shadow signals (never traded)", ("time", "symbol", "side", "conf", "model")),
}


def _time(value: datetime) -> str:
    return value.astimezone().strftime("%H:%M:%S")


def _num(value: float | None, fmt: str = ",.2f") -> str:
    return "-" if value is None else format(value, fmt)


def _price(value: float) -> str:
    return f"{value:.6g}"


def render_account(snap: Snapshot) -> str:
    """The account panel's text (rich markup)."""
    breaker = (
        "[dim]unknown[/]"
        if snap.circuit_breaker is None
        else ("[b red]TRIPPED: trading halted[/]" if snap.circuit_breaker else "[green]armed[/]")
    )
    lines = [
        "[b]Account (paper)[/]",
        f"equity      {_num(snap.equity_usdt)} USDT",
        f"exposure    {_num(snap.exposure_usdt)} USDT"
        + (f" ({snap.exposure_pct:.1f} %)" if snap.exposure_pct is not None else ""),
        f"daily PnL   {_num(snap.daily_pnl_usdt, '+,.2f')} USDT",
        f"positions   {len(snap.positions)} open",
        f"breaker     {breaker}",
    ]
    if snap.last_risk_event is not None:
        event = snap.last_risk_event
        lines.append(f"last risk   {event.kind}: {event.reason[:40]}")
    if snap.last_notification is not None:
        lines.append(f"last told   {escape(snap.last_notification[:70])}")
    if snap.errors:
        lines.append("[red]" + "; ".join(e[:80] for e in snap.errors) + "[/]")
    return "\n".join(lines)


class DashboardApp(App[None]):
    """Refreshes once a second from a :class:`DashboardSource`."""

    TITLE = "Claire de Binare: paper trading"
    CSS = """
    Grid { grid-size: 3 3; grid-rows: 1fr 1fr 1fr; grid-gutter: 0 1; }
    DataTable { height: 100%; border: round $primary; }
    #account { height: 100%; border: round $accent; padding: 0 1; }
    """
    BINDINGS = [
        Binding("q", "quit", "Quit (stops the demo)"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("r", "refresh_now", "Refresh"),
    ]

    def __init__(self, source: DashboardSource, interval_s: float = 1.0) -> None:
        super().__init__()
        self.source = source
        self.interval_s = interval_s
        self.snapshot: Snapshot | None = None
        self.refreshes = 0
        self._busy = False

    def compose(self) -> ComposeResult:
        yield Header(show_clock=True)
        with Grid():
            for panel in ("gainers", "losers", "services", "signals", "orders", "fills"):
                yield DataTable(id=panel, zebra_stripes=True, cursor_type="none")
            yield DataTable(id="positions", zebra_stripes=True, cursor_type="none")
            yield Static("starting …", id="account")
            yield DataTable(id="ml_signals", zebra_stripes=True, cursor_type="none")
        yield Footer()

    def on_mount(self) -> None:
        for panel, (title, columns) in PANELS.items():
            table = self.query_one(f"#{panel}", DataTable)
            table.border_title = title
            table.add_columns(*columns)
        self.set_interval(self.interval_s, self.action_refresh_now)
        self.call_later(self.action_refresh_now)

    async def action_refresh_now(self) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            snap = await self.source.snapshot()
            self.show(snap)
        finally:
            self._busy = False

    def _fill(self, panel: str, rows: list[tuple[str, ...]]) -> None:
        table = self.query_one(f"#{panel}", DataTable)
        table.clear()
        for row in rows:
            table.add_row(*row)

    def show(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.refreshes += 1
        for panel, movers in (("gainers", snap.gainers), ("losers", snap.losers)):
            self._fill(
                panel,
                [
                    (m.symbol, _price(m.price), f"{m.pct_change:+.2f}%", f"{m.volume:,.0f}")
                    for m in movers
                ],
            )
        self._fill(
            "services",
            [
                (
                    s.name,
                    s.health,
                    f"{s.rate_per_s:,.1f} {s.rate_label}" if s.rate_per_s is not None else "…",
                )
                for s in snap.services
            ],
        )
        self._fill(
            "signals",
            [
                (
                    _time(s.signal_ts),
                    s.symbol,
                    s.side,
                    f"{s.confidence:.2f}",
                    f"{s.pct_change:+.2f}%",
                    _price(s.price),
                )
                for s in snap.signals
            ],
        )
        self._fill(
            "orders",
            [
                (
                    _time(o.created_at),
                    o.symbol,
                    o.side,
                    f"{o.quantity:g}",
                    f"{o.notional:,.2f}",
                    o.status,
                )
                for o in snap.orders
            ],
        )
        self._fill(
            "fills",
            [
                (
                    _time(f.created_at),
                    f.symbol,
                    f.kind,
                    _price(f.price),
                    f"{f.quantity:g}",
                    f"{f.fee:.4f}",
                    f"{f.realized_pnl:+.2f}",
                )
                for f in snap.fills
            ],
        )
        self._fill(
            "positions",
            [
                (
                    p.position.symbol,
                    p.position.side,
                    f"{p.position.quantity:g}",
                    _price(p.position.entry_price),
                    _price(p.mark) if p.mark is not None else "-",
                    _num(p.unrealized_pnl, "+,.2f"),
                )
                for p in snap.positions
            ],
        )
        self._fill(
            "ml_signals",
            [
                (_time(m.signal_ts), m.symbol, m.side, f"{m.confidence:.2f}", m.model_version)
                for m in snap.ml_signals
            ],
        )
        self.query_one("#account", Static).update(render_account(snap))
