"""execution_service's configuration. Live trading needs three explicit things at once:
``TRADING_MODE=live``, ``LIVE_TRADING_CONFIRM=yes`` and both MEXC keys."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from cdb.core.config import ServiceSettings

__all__ = ["ExecutionSettings"]


class ExecutionSettings(ServiceSettings):
    http_port: int = Field(default=8003, gt=0, lt=65536)
    trading_mode: Literal["paper", "live"] = "paper"
    paper_slippage_bps: float = Field(default=5.0, ge=0, le=1000, allow_inf_nan=False)
    taker_fee_rate: float = Field(
        default=0.0002, ge=0, lt=0.01, allow_inf_nan=False, description="MEXC futures 0.02 %"
    )
    maker_fee_rate: float = Field(default=0.0, ge=0, lt=0.01, allow_inf_nan=False)
    mexc_rest_url: str = Field(default="https://api.mexc.com", pattern=r"^https?://")
    mexc_leverage: int = Field(default=1, ge=1, le=200)
    mexc_recv_window_s: int = Field(default=10, ge=1, le=60)
    mexc_timeout_s: float = Field(default=10.0, gt=0)
    live_poll_interval_s: float = Field(default=5.0, gt=0)
    # how often the venue's positions are compared with the book (live; at start too)
    position_check_interval_s: float = Field(default=60.0, gt=0, le=86_400)
    live_trading_confirm: str = ""
    mexc_api_key: SecretStr = SecretStr("")
    mexc_api_secret: SecretStr = SecretStr("")

    @field_validator("live_trading_confirm")
    @classmethod
    def _confirmed(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("trading_mode") == "live" and value != "yes":
            raise ValueError("TRADING_MODE=live refuses to start without LIVE_TRADING_CONFIRM=yes")
        return value

    @field_validator("mexc_api_secret")
    @classmethod
    def _keys_present(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        if info.data.get("trading_mode") == "live":
            key = info.data.get("mexc_api_key")
            if not value.get_secret_value() or key is None or not key.get_secret_value():
                raise ValueError("TRADING_MODE=live needs MEXC_API_KEY and MEXC_API_SECRET")
        return value
