"""bot_rest configuration (environment variables of the same name, upper case)."""

from __future__ import annotations

from pydantic import Field

from cdb.core.config import ServiceSettings

__all__ = ["BotRestSettings"]


class BotRestSettings(ServiceSettings):
    http_port: int = Field(default=8004, gt=0, lt=65536)
    mexc_rest_url: str = Field(default="https://api.mexc.com", pattern=r"^https?://")
    rest_timeout_s: float = Field(default=10.0, gt=0)
    universe_ttl_s: float = Field(default=300.0, ge=0)
    tickers_ttl_s: float = Field(default=2.0, ge=0)
    klines_ttl_s: float = Field(default=30.0, ge=0)
    max_kline_bars: int = Field(default=10_000, ge=1, description="per /klines request")
    # MEXC's current limits per 2 s (detail 10, ticker 10, kline 20); we stay below them.
    rate_detail_per_2s: int = Field(default=10, ge=1)
    rate_ticker_per_2s: int = Field(default=10, ge=1)
    rate_kline_per_2s: int = Field(default=20, ge=1)
