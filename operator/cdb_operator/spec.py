"""The TradingBot resource as pydantic models, and what the operator derives from it.

The CRD (charts/cdb/crds/tradingbots.yaml) validates on the API server; these models
validate again at the operator's edge (KMock and old API servers default nothing), with
the same defaults and bounds, so a spec the operator accepts always makes a valid
:class:`cdb.core.events.ControlSettings`.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cdb.core.events import ControlSettings

__all__ = [
    "ResolvedConfig",
    "Symbol",
    "TradingBotSpec",
    "chunk_count",
    "stable_hash",
]

Symbol = Annotated[str, Field(min_length=3, max_length=40, pattern=r"^[A-Z0-9]+_[A-Z0-9]+$")]
Percent = Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)]


class SpecModel(BaseModel):
    """Spec parts: unknown fields rejected (the API server prunes them), ints accepted as floats."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SignalSpec(SpecModel):
    threshold_pct: float = Field(default=3.0, gt=0, le=100, alias="thresholdPct")
    min_volume: float = Field(default=100_000, ge=0, alias="minVolume")
    lookback_minutes: int = Field(default=15, ge=1, le=1440, alias="lookbackMinutes")


class RiskSpec(SpecModel):
    max_daily_loss_pct: Percent = Field(default=5, alias="maxDailyLossPct")
    max_position_pct: Percent = Field(default=10, alias="maxPositionPct")
    max_exposure_pct: Percent = Field(default=50, alias="maxExposurePct")
    stop_loss_pct: Percent = Field(default=2, alias="stopLossPct")

    @model_validator(mode="after")
    def position_within_exposure(self) -> RiskSpec:
        if self.max_position_pct > self.max_exposure_pct:
            raise ValueError("risk.maxPositionPct must not exceed risk.maxExposurePct")
        return self


class SecretRef(SpecModel):
    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class TradingSpec(SpecModel):
    mode: Literal["paper", "live"] = "paper"
    paused: bool = False
    approval: Literal["auto", "manual"] = "auto"
    approval_timeout_seconds: int = Field(default=60, ge=5, le=3600, alias="approvalTimeoutSeconds")
    credentials_secret_ref: SecretRef | None = Field(default=None, alias="credentialsSecretRef")

    @model_validator(mode="after")
    def live_needs_credentials(self) -> TradingSpec:
        if self.mode == "live" and self.credentials_secret_ref is None:
            raise ValueError("trading.mode live requires trading.credentialsSecretRef")
        return self


class ShadowModeSpec(SpecModel):
    enabled: bool = True
    confidence_threshold: float = Field(default=0.7, ge=0, le=1, alias="confidenceThreshold")


class TradingBotSpec(SpecModel):
    """``spec`` of a TradingBot, with the CRD's defaults."""

    exchange: Literal["mexc"] = "mexc"
    symbols: list[Symbol] = Field(default_factory=list, max_length=5000)
    universe: Literal["all-usdt-perpetuals"] | None = None
    chunk_size: int = Field(default=200, ge=1, le=200, alias="chunkSize")
    signal: SignalSpec = Field(default_factory=SignalSpec)
    risk: RiskSpec = Field(default_factory=RiskSpec)
    trading: TradingSpec = Field(default_factory=TradingSpec)
    shadow_mode: ShadowModeSpec = Field(default_factory=ShadowModeSpec, alias="shadowMode")

    @model_validator(mode="after")
    def symbols_or_universe(self) -> TradingBotSpec:
        if bool(self.symbols) == (self.universe is not None):
            raise ValueError("set exactly one of spec.symbols (non-empty) or spec.universe")
        return self

    def live_settings(self) -> ControlSettings:
        """What services apply live, without a restart (the ``control`` event)."""
        return ControlSettings(
            signal_threshold_pct=float(self.signal.threshold_pct),
            signal_min_volume=float(self.signal.min_volume),
            lookback_min=self.signal.lookback_minutes,
            paused=self.trading.paused,
            max_daily_loss_pct=float(self.risk.max_daily_loss_pct),
            max_position_pct=float(self.risk.max_position_pct),
            max_exposure_pct=float(self.risk.max_exposure_pct),
            stop_loss_pct=float(self.risk.stop_loss_pct),
            shadow_enabled=self.shadow_mode.enabled,
            shadow_confidence_threshold=float(self.shadow_mode.confidence_threshold),
            approval=self.trading.approval,
            approval_timeout_s=self.trading.approval_timeout_seconds,
        )


def chunk_count(symbols: int, chunk_size: int) -> int:
    """bot_ws replicas: one per chunk of at most ``chunk_size`` symbols (at least one)."""
    return max(1, math.ceil(symbols / chunk_size))


def stable_hash(value: Any) -> str:
    """A short hash of a JSON value, independent of key order."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class ResolvedConfig(BaseModel):
    """A bot's config with its symbols resolved: what the ConfigMap holds and audit diffs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exchange: str
    universe: str | None
    symbols: list[str]
    chunk_size: int
    chunks: int
    mode: str
    credentials_secret: str | None
    signal: dict[str, float | int]
    risk: dict[str, float]
    paused: bool
    shadow: dict[str, float | bool]
    approval: str
    approval_timeout_seconds: int

    @classmethod
    def build(cls, spec: TradingBotSpec, symbols: list[str]) -> ResolvedConfig:
        unique = sorted(set(symbols))
        ref = spec.trading.credentials_secret_ref
        return cls(
            exchange=spec.exchange,
            universe=spec.universe,
            symbols=unique,
            chunk_size=spec.chunk_size,
            chunks=chunk_count(len(unique), spec.chunk_size),
            mode=spec.trading.mode,
            credentials_secret=ref.name if ref else None,
            signal=spec.signal.model_dump(by_alias=True),
            risk=spec.risk.model_dump(by_alias=True),
            paused=spec.trading.paused,
            shadow=spec.shadow_mode.model_dump(by_alias=True),
            approval=spec.trading.approval,
            approval_timeout_seconds=spec.trading.approval_timeout_seconds,
        )

    def document(self) -> dict[str, Any]:
        """The config as the user wrote it (camelCase paths match the spec's)."""
        return {
            "exchange": self.exchange,
            "universe": self.universe,
            "symbols": self.symbols,
            "chunkSize": self.chunk_size,
            "chunks": self.chunks,
            "signal": self.signal,
            "risk": self.risk,
            "trading": {
                "mode": self.mode,
                "paused": self.paused,
                "approval": self.approval,
                "approvalTimeoutSeconds": self.approval_timeout_seconds,
                "credentialsSecretRef": self.credentials_secret,
            },
            "shadowMode": self.shadow,
        }

    @property
    def config_hash(self) -> str:
        return stable_hash(self.document())

    @property
    def workload_hash(self) -> str:
        """Changes only when the screener pods must restart to pick the change up."""
        return stable_hash(
            {
                "exchange": self.exchange,
                "symbols": self.symbols,
                "chunkSize": self.chunk_size,
                "lookbackMinutes": self.signal["lookbackMinutes"],
            }
        )
