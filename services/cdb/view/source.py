"""What the live view shows, gathered from where it really lives.

* movers and mark prices: the newest ``market_data`` (and ``candles``) on the Redis bus;
* signals, orders, fills, open positions, equity: PostgreSQL;
* each service's health: its ``/health``; rates, equity, exposure and the circuit breaker:
  the agreed metric names on each ``/metrics`` (docs/METRICS.md).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict, Field

from cdb.core.bus import Bus, connect_redis
from cdb.core.config import ServiceSettings
from cdb.core.db import AsyncConnection, dict_row
from cdb.core.events import Candle, MarketData, Stream
from cdb.core.probe import probe_health
from cdb.report.books import (
    EquityPoint,
    FillRow,
    MlSignalRow,
    OrderRow,
    PositionRow,
    RiskEventRow,
    SignalRow,
    connect,
)

__all__ = [
    "DashboardSource",
    "Mover",
    "OpenPosition",
    "ServiceState",
    "Snapshot",
    "SourceConfig",
]

RECENT = 12
RATE_WINDOW_S = 10.0
MARKET_WINDOW = 2000


class SourceConfig(BaseModel):
    """Where to look: Redis, PostgreSQL and each service's base URL."""

    model_config = ConfigDict(frozen=True)

    stores: ServiceSettings  # Redis (read through the kernel's bus) and PostgreSQL
    services: dict[str, str]

    @classmethod
    def from_settings(cls, settings: ServiceSettings, services: Mapping[str, str]) -> SourceConfig:
        return cls(stores=settings, services=dict(services))


class Mover(BaseModel):
    symbol: str
    price: float
    pct_change: float
    volume: float


class OpenPosition(BaseModel):
    position: PositionRow
    mark: float | None
    unrealized_pnl: float | None


class ServiceState(BaseModel):
    name: str
    health: str
    rate_per_s: float | None = None
    rate_label: str = "events/s"


class Snapshot(BaseModel):
    """One refresh of the view."""

    taken_at: float = Field(default_factory=time.time)
    gainers: list[Mover] = Field(default_factory=list)
    losers: list[Mover] = Field(default_factory=list)
    signals: list[SignalRow] = Field(default_factory=list)
    orders: list[OrderRow] = Field(default_factory=list)
    fills: list[FillRow] = Field(default_factory=list)
    ml_signals: list[MlSignalRow] = Field(default_factory=list)
    positions: list[OpenPosition] = Field(default_factory=list)
    equity: EquityPoint | None = None
    equity_usdt: float | None = None
    exposure_usdt: float | None = None
    exposure_pct: float | None = None
    daily_pnl_usdt: float | None = None
    circuit_breaker: bool | None = None
    last_risk_event: RiskEventRow | None = None
    last_notification: str | None = None  # the notifier's newest message and its state
    services: list[ServiceState] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)


def parse_metrics(text: str) -> dict[str, float]:
    """Sample name → value summed over labels (counters and gauges)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + float(sample.value)
    return values


def movers_from(events: list[MarketData]) -> dict[str, Mover]:
    """The newest market_data per symbol (events newest first)."""
    latest: dict[str, Mover] = {}
    for event in events:
        if event.symbol not in latest:
            latest[event.symbol] = Mover(
                symbol=event.symbol,
                price=event.price,
                pct_change=event.pct_change,
                volume=event.volume,
            )
    return latest


def closes_from(candles: list[Candle]) -> dict[str, float]:
    latest: dict[str, float] = {}
    for candle in candles:
        latest.setdefault(candle.symbol, candle.close)
    return latest


class DashboardSource:
    """Builds :class:`Snapshot` objects; keeps its connections between refreshes."""

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.bus = Bus(connect_redis(config.stores, socket_timeout=5.0))
        self.http = httpx.AsyncClient(timeout=2.0)
        self.conn: AsyncConnection[Any] | None = None
        self._samples: dict[str, deque[tuple[float, float]]] = {}

    async def close(self) -> None:
        await self.bus.close()
        await self.http.aclose()
        if self.conn is not None:
            await self.conn.close()

    async def snapshot(self) -> Snapshot:
        snap = Snapshot()
        marks = await self._market(snap)
        await self._books(snap, marks)
        await self._services(snap)
        return snap

    async def _market(self, snap: Snapshot) -> dict[str, float]:
        try:
            market = await self.bus.recent(Stream.MARKET_DATA, MarketData, MARKET_WINDOW)
            candles = await self.bus.recent(Stream.CANDLES, Candle, MARKET_WINDOW)
        except Exception as error:
            snap.errors.append(f"redis: {type(error).__name__}: {error}")
            return {}
        movers = movers_from(market)
        ranked = sorted(movers.values(), key=lambda m: m.pct_change, reverse=True)
        snap.gainers = [m for m in ranked if m.pct_change > 0][:5]
        snap.losers = [m for m in reversed(ranked) if m.pct_change < 0][:5]
        marks = closes_from(candles)
        marks.update({symbol: mover.price for symbol, mover in movers.items()})
        return marks

    async def _connection(self) -> AsyncConnection[Any]:
        if self.conn is None or self.conn.closed:
            self.conn = await connect(self.config.stores)
        return self.conn

    async def _books(self, snap: Snapshot, marks: dict[str, float]) -> None:
        try:
            conn = await self._connection()
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    b"SELECT * FROM signals ORDER BY signal_ts DESC LIMIT %s", (RECENT,)
                )
                snap.signals = [SignalRow.model_validate(r) for r in await cur.fetchall()]
                await cur.execute(
                    b"SELECT * FROM orders ORDER BY created_at DESC LIMIT %s", (RECENT,)
                )
                snap.orders = [OrderRow.model_validate(r) for r in await cur.fetchall()]
                await cur.execute(
                    b"SELECT * FROM fills ORDER BY created_at DESC LIMIT %s", (RECENT,)
                )
                snap.fills = [FillRow.model_validate(r) for r in await cur.fetchall()]
                await cur.execute(
                    b"SELECT * FROM ml_signals ORDER BY signal_ts DESC LIMIT %s", (RECENT,)
                )
                snap.ml_signals = [MlSignalRow.model_validate(r) for r in await cur.fetchall()]
                await cur.execute(
                    b"SELECT * FROM positions WHERE status = 'open' ORDER BY opened_at DESC"
                )
                for row in await cur.fetchall():
                    position = PositionRow.model_validate(row)
                    mark = marks.get(position.symbol)
                    snap.positions.append(
                        OpenPosition(
                            position=position,
                            mark=mark,
                            unrealized_pnl=position.unrealized_pnl(mark),
                        )
                    )
                await cur.execute(
                    b"SELECT * FROM equity ORDER BY recorded_at DESC, id DESC LIMIT 1"
                )
                latest = await cur.fetchone()
                snap.equity = EquityPoint.model_validate(latest) if latest else None
                await cur.execute(b"SELECT * FROM risk_events ORDER BY created_at DESC LIMIT 1")
                risk = await cur.fetchone()
                snap.last_risk_event = RiskEventRow.model_validate(risk) if risk else None
                await cur.execute(
                    b"SELECT n.title, string_agg(d.channel || ' ' || d.status, ', ') AS sent"
                    b" FROM notifications n LEFT JOIN notification_deliveries d USING (key)"
                    b" GROUP BY n.key ORDER BY max(n.created_at) DESC, n.key LIMIT 1"
                )
                told = await cur.fetchone()
                if told is not None:
                    snap.last_notification = f"{told['title']} ({told['sent'] or 'no channel'})"
        except Exception as error:
            snap.errors.append(f"postgres: {type(error).__name__}: {error}")
            if self.conn is not None:
                await self.conn.close()
                self.conn = None

    async def _metrics(self, url: str) -> dict[str, float]:
        try:
            reply = await self.http.get(f"{url}/metrics")
            reply.raise_for_status()
            return parse_metrics(reply.text)
        except (httpx.HTTPError, ValueError):
            return {}

    def _rate(self, name: str, total: float | None, now: float) -> float | None:
        """Per-second rate of a counter over the last ``RATE_WINDOW_S`` (bursts smoothed)."""
        if total is None:
            return None
        samples = self._samples.setdefault(name, deque())
        samples.append((now, total))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_S:
            samples.popleft()
        first_at, first_total = samples[0]
        if now <= first_at:
            return None
        return max(0.0, (total - first_total) / (now - first_at))

    async def _service(self, name: str, url: str) -> tuple[ServiceState, dict[str, float]]:
        health, metrics = await asyncio.gather(probe_health(self.http, url), self._metrics(url))
        now = time.monotonic()
        if name == "bot_ws" and "bot_ws_ticks_total" in metrics:
            total: float | None = metrics["bot_ws_ticks_total"]
            label = "ticks/s"
        elif metrics:
            total = metrics.get("cdb_events_consumed_total", 0.0) + metrics.get(
                "cdb_events_published_total", 0.0
            )
            label = "events/s"
        else:
            total, label = None, "-"
        rate = self._rate(name, total, now)
        return ServiceState(name=name, health=health, rate_per_s=rate, rate_label=label), metrics

    async def _services(self, snap: Snapshot) -> None:
        results = await asyncio.gather(
            *(self._service(name, url) for name, url in self.config.services.items())
        )
        snap.services = [state for state, _ in results]
        risk = (
            dict(results[list(self.config.services).index("risk_manager")][1])
            if ("risk_manager" in self.config.services)
            else {}
        )
        snap.equity_usdt = risk.get("risk_equity_usdt")
        snap.exposure_usdt = risk.get("risk_exposure_usdt")
        snap.exposure_pct = risk.get("risk_exposure_pct")
        snap.daily_pnl_usdt = risk.get("risk_daily_pnl_usdt")
        breaker = risk.get("risk_circuit_breaker_active")
        snap.circuit_breaker = None if breaker is None else breaker >= 1.0
        if snap.equity_usdt is None and snap.equity is not None:
            snap.equity_usdt = snap.equity.equity
            snap.exposure_usdt = snap.equity.exposure
