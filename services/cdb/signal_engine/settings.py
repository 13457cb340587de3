"""signal_engine's configuration (environment variables of the same names, upper case)."""

from __future__ import annotations

from pydantic import Field

from cdb.core.config import ServiceSettings


class SignalEngineSettings(ServiceSettings):
    http_port: int = Field(default=8001, gt=0, lt=65536)
    signal_threshold_pct: float = Field(default=3.0, gt=0, allow_inf_nan=False)
    signal_min_volume: float = Field(default=100_000.0, ge=0, allow_inf_nan=False)
    lookback_min: int = Field(default=15, gt=0, le=1440)
    signal_allow_short: bool = False
    signal_cooldown_s: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="default: the lookback window"
    )
