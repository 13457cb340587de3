"""The trading books as typed rows: read from PostgreSQL, or built by a replay.

The live view, the headless summary, the HTML report and the replay all speak
:class:`Books`, so a replay's report is the same report as a live run's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from cdb.core.db import AsyncConnection, connect, dict_row

__all__ = [
    "TABLES",
    "Books",
    "EquityPoint",
    "FillRow",
    "MlSignalRow",
    "OrderRow",
    "PositionRow",
    "RiskEventRow",
    "SignalRow",
    "connect",
    "count_rows",
    "read_books",
]

TABLES: tuple[str, ...] = (
    "signals",
    "ml_signals",
    "orders",
    "fills",
    "positions",
    "risk_events",
    "equity",
)

Side = Literal["long", "short"]


class Row(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class SignalRow(Row):
    signal_id: str
    symbol: str
    side: Side
    confidence: float
    strategy: str = "momentum"
    reason: str = ""
    price: float
    pct_change: float
    signal_ts: datetime


class MlSignalRow(Row):
    signal_id: str
    symbol: str
    side: Side
    model: str
    model_version: str
    confidence: float
    price: float
    signal_ts: datetime


class OrderRow(Row):
    order_id: str
    signal_id: str
    symbol: str
    side: Side
    quantity: float
    notional: float
    price: float
    stop_loss: float
    mode: str = "paper"
    status: str
    reason: str = ""
    created_at: datetime


class FillRow(Row):
    fill_id: str
    order_id: str
    symbol: str
    side: Side
    kind: Literal["open", "close"]
    price: float
    quantity: float
    fee: float = 0.0
    realized_pnl: float = 0.0
    created_at: datetime


class PositionRow(Row):
    position_id: str
    order_id: str
    symbol: str
    side: Side
    quantity: float
    entry_price: float
    stop_loss: float
    status: Literal["open", "closed"]
    exit_price: float | None = None
    realized_pnl: float = 0.0
    opened_at: datetime
    closed_at: datetime | None = None

    def unrealized_pnl(self, mark: float | None) -> float | None:
        """PnL at ``mark`` for an open position (None without a price)."""
        if mark is None or self.status != "open":
            return None
        direction = 1.0 if self.side == "long" else -1.0
        return direction * (mark - self.entry_price) * self.quantity


class EquityPoint(Row):
    equity: float
    realized_pnl: float = 0.0
    exposure: float = 0.0
    reason: str = ""
    recorded_at: datetime


class RiskEventRow(Row):
    kind: str
    signal_id: str | None = None
    reason: str
    created_at: datetime


class Books(BaseModel):
    """Everything the report shows, oldest first."""

    model_config = ConfigDict(extra="forbid")

    signals: list[SignalRow] = Field(default_factory=list)
    ml_signals: list[MlSignalRow] = Field(default_factory=list)
    orders: list[OrderRow] = Field(default_factory=list)
    fills: list[FillRow] = Field(default_factory=list)
    positions: list[PositionRow] = Field(default_factory=list)
    equity: list[EquityPoint] = Field(default_factory=list)
    risk_events: list[RiskEventRow] = Field(default_factory=list)
    source: str = "postgres"


R = TypeVar("R", bound=Row)

_QUERIES: dict[str, tuple[type[Row], str, str]] = {
    "signals": (SignalRow, "SELECT * FROM signals", "signal_ts"),
    "ml_signals": (MlSignalRow, "SELECT * FROM ml_signals", "signal_ts"),
    "orders": (OrderRow, "SELECT * FROM orders", "created_at"),
    "fills": (FillRow, "SELECT * FROM fills", "created_at"),
    "positions": (PositionRow, "SELECT * FROM positions", "opened_at"),
    "equity": (EquityPoint, "SELECT * FROM equity", "recorded_at"),
    "risk_events": (RiskEventRow, "SELECT * FROM risk_events", "created_at"),
}


async def _read(conn: AsyncConnection[Any], table: str, limit: int) -> list[Any]:
    model, select, order = _QUERIES[table]
    # newest ``limit`` rows, returned oldest first; table and column names are constants
    query = f"SELECT * FROM ({select} ORDER BY {order} DESC LIMIT %s) AS t ORDER BY {order}"
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query.encode(), (limit,))
        return [model.model_validate(row) for row in await cursor.fetchall()]


async def read_books(
    conn: AsyncConnection[Any], *, limit: int = 100_000, open_positions_only: bool = False
) -> Books:
    """The newest ``limit`` rows of each table (all of them for a report)."""
    books = Books()
    for table in _QUERIES:
        rows = await _read(conn, table, limit)
        if table == "positions" and open_positions_only:
            rows = [row for row in rows if row.status == "open"]
        setattr(books, table, rows)
    return books


async def count_rows(conn: AsyncConnection[Any]) -> dict[str, int]:
    """Row counts of the books, plus open and closed positions."""
    counts: dict[str, int] = {}
    async with conn.cursor() as cursor:
        for table in TABLES:
            await cursor.execute(f"SELECT count(*) FROM {table}".encode())
            row = await cursor.fetchone()
            counts[table] = int(row[0]) if row else 0
        await cursor.execute(b"SELECT status, count(*) FROM positions GROUP BY status")
        for status, count in await cursor.fetchall():
            counts[f"positions_{status}"] = int(count)
    counts.setdefault("positions_open", 0)
    counts.setdefault("positions_closed", 0)
    return counts
