"""bot_rest's HTTP contract: one pydantic model per answer, the single source of
``schemas/bot_rest.*.json`` (like the bus events), shared by bot_rest's routes and
:mod:`cdb.core.rest_client`.

Fields are added, never renamed or removed, so an older client keeps reading a newer
bot_rest (unknown fields are ignored); a missing or mistyped field is a malformed answer.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = [
    "REST_MODELS",
    "ContractOut",
    "ErrorOut",
    "KlineBar",
    "KlinesOut",
    "TickerOut",
    "TickersOut",
    "UniverseOut",
]


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
    """``GET /universe``: the USDT-margined perpetuals open for API trading, by symbol."""

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
    """``GET /tickers[?symbol=]``: 24 h tickers of the USDT contracts."""

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
    """``GET /klines/{symbol}?start=&end=``: Min1 bars opening in ``[start, end]``."""

    symbol: str
    interval: str
    start: int
    end: int
    bars: list[KlineBar]


class ErrorOut(_Out):
    """Every non-200 answer: ``bad_request`` (400), ``unknown_symbol`` (404),
    ``mexc_error`` (502, with MEXC's ``code``), ``mexc_timeout`` (504)."""

    error: str
    message: str
    code: int | None = None


# schema file stem → model (``cdb schemas`` writes ``schemas/<stem>.json``)
REST_MODELS: dict[str, type[BaseModel]] = {
    "bot_rest.universe": UniverseOut,
    "bot_rest.tickers": TickersOut,
    "bot_rest.klines": KlinesOut,
    "bot_rest.error": ErrorOut,
}
