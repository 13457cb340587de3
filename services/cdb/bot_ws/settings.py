"""bot_ws configuration (environment variables of the same name, upper case)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from cdb.bot_ws.chunks import MAX_CHUNK_SIZE, index_from_name
from cdb.core.config import ServiceSettings

__all__ = ["BotWsSettings"]


class BotWsSettings(ServiceSettings):
    http_port: int = Field(default=8000, gt=0, lt=65536)
    stale_after_s: float = Field(default=30.0, gt=0)

    mexc_ws_url: str = Field(default="wss://contract.mexc.com/edge", pattern=r"^wss?://")
    mexc_rest_url: str = Field(default="https://api.mexc.com", pattern=r"^https?://")
    bot_rest_url: str | None = Field(default=None, pattern=r"^https?://")

    symbols: str = Field(default="", description="comma list; empty: UNIVERSE")
    universe: Literal["all-usdt-perpetuals"] = "all-usdt-perpetuals"
    chunk_size: int = Field(default=MAX_CHUNK_SIZE, ge=1, le=MAX_CHUNK_SIZE)
    chunk_index: int | None = Field(default=None, ge=0)
    chunk_count: int = Field(default=1, ge=1)
    pod_name: str | None = None
    bot_name: str | None = Field(
        default=None, description="the TradingBot (set by the operator): control of others ignored"
    )

    lookback_min: int = Field(default=15, gt=0, le=1440)
    publish_interval_s: float = Field(default=5.0, gt=0)
    top_n: int = Field(default=5, ge=1, le=50)
    ping_interval_s: float = Field(default=15.0, gt=0, le=50)
    pong_timeout_s: float = Field(default=5.0, gt=0)
    close_grace_ms: int = Field(default=2_000, ge=0, le=30_000)
    # how fast the exchange clock may run (frame times); MEXC runs at 1, mexc_sim at --speed
    frame_clock_max_rate: float = Field(default=1.5, gt=0, le=100_000)
    frame_max_ahead_s: float = Field(default=300.0, ge=0)
    frame_max_jump_s: float = Field(default=10.0, ge=0)
    rest_timeout_s: float = Field(default=10.0, gt=0)
    rest_rate_per_2s: int = Field(default=20, ge=1, description="MEXC: klines 20 per 2 s")
    reconnect_max_s: float = Field(default=30.0, gt=0)

    @field_validator("bot_rest_url", "pod_name", "bot_name", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("symbols")
    @classmethod
    def _symbols_shape(cls, value: str) -> str:
        for symbol in (s.strip() for s in value.split(",") if s.strip()):
            if "_" not in symbol or symbol.upper() != symbol:
                raise ValueError(f"{symbol!r} is not a MEXC contract symbol like BTC_USDT")
        return value

    @model_validator(mode="after")
    def _index_in_range(self) -> BotWsSettings:
        if self.pod_index() >= self.chunk_count:
            raise ValueError(
                f"chunk index {self.pod_index()} must be below CHUNK_COUNT={self.chunk_count}"
            )
        return self

    def symbol_list(self) -> list[str]:
        return [s.strip() for s in self.symbols.split(",") if s.strip()]

    def pod_index(self) -> int:
        """``CHUNK_INDEX``, else the StatefulSet ordinal of ``POD_NAME`` or the hostname."""
        if self.chunk_index is not None:
            return self.chunk_index
        return index_from_name(self.pod_name)
