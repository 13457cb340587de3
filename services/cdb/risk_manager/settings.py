"""risk_manager's configuration (environment variables of the same names, upper case)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cdb.core.config import ServiceSettings


class RiskManagerSettings(ServiceSettings):
    http_port: int = Field(default=8002, gt=0, lt=65536)
    max_position_pct: float = Field(default=10.0, gt=0, le=100, allow_inf_nan=False)
    max_exposure_pct: float = Field(default=50.0, gt=0, le=100, allow_inf_nan=False)
    stop_loss_pct: float = Field(default=2.0, gt=0, lt=100, allow_inf_nan=False)
    max_daily_loss_pct: float = Field(default=5.0, gt=0, le=100, allow_inf_nan=False)
    starting_equity: float = Field(default=10_000.0, gt=0, allow_inf_nan=False)
    shadow_confidence_threshold: float = Field(default=0.7, ge=0, le=1, allow_inf_nan=False)
    # manual: every order the rules approve waits for the owner (console, cdb approve);
    # a control event's approval / approval_timeout_s override these two
    risk_approval: Literal["auto", "manual"] = "auto"
    risk_approval_timeout_s: int = Field(default=60, ge=1, le=3600)
    # how often held orders whose window closed are expired (an approve after the window
    # is refused whenever it comes)
    risk_approval_check_s: float = Field(default=1.0, gt=0, le=60, allow_inf_nan=False)
