"""What bot_rest answers: one pydantic model per payload."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["ContractOut", "KlineBar", "KlinesOut", "TickerOut", "TickersOut", "UniverseOut"]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class ContractOut(_Out):
    symbol: str
    base_coin: str
    contract_size: float
    price_scale: int
    price_unit: float
    vol_scale: int
    vol_unit: float
    min_vol: float
    max_vol: float
    max_leverage: int
    taker_fee_rate: float
    maker_fee_rate: float


class UniverseOut(_Out):
    count: int
    symbols: list[ContractOut]


class TickerOut(_Out):
    symbol: str
    last_price: float
    volume24: float
    amount24: float
    rise_fall_rate: float
    high24_price: float
    lower24_price: float
    fair_price: float
    funding_rate: float | None
    timestamp: int


class TickersOut(_Out):
    count: int
    tickers: list[TickerOut]


class KlineBar(_Out):
    """A MEXC Min1 bar; ``open`` is MEXC's (previous close), ``realOpen`` the bar's own."""

    time: int
    open: float
    close: float
    high: float
    low: float
    vol: float
    amount: float
    realOpen: float | None = None
    realClose: float | None = None
    realHigh: float | None = None
    realLow: float | None = None


class KlinesOut(_Out):
    symbol: str
    interval: str
    start: int
    end: int
    bars: list[KlineBar]
