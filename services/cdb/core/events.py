"""The events on the bus: one pydantic model each, the single source of ``schemas/*.json``.

Every event carries a unique ``event_id`` and a ``schema_version``. Unknown fields and
mistyped values are rejected (``extra="forbid"``, strict types), so a malformed entry is
dead-lettered instead of being half understood.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from enum import StrEnum
from typing import Annotated, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "EVENT_MODELS",
    "STREAMS",
    "Alert",
    "ApprovalDecision",
    "ApprovalRequest",
    "Candle",
    "Control",
    "ControlSettings",
    "Event",
    "EventModel",
    "MarketData",
    "MlSignal",
    "Order",
    "OrderResult",
    "ShapFeature",
    "Signal",
    "Stream",
    "deterministic_id",
    "new_event_id",
]

SCHEMA_VERSION: Literal[1] = 1

Symbol = Annotated[str, Field(min_length=3, max_length=40, pattern=r"^[A-Z0-9]+_[A-Z0-9]+$")]
Side = Literal["long", "short"]
TradingMode = Literal["paper", "live"]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Unit = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


def new_event_id() -> str:
    return uuid.uuid4().hex


def deterministic_id(prefix: str, *parts: object) -> str:
    """A stable id from its inputs: the same inputs always give the same id."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:32]
    return f"{prefix}-{digest}"


class Stream(StrEnum):
    """One Redis Stream per event type."""

    MARKET_DATA = "cdb:market_data"
    CANDLES = "cdb:candles"
    SIGNALS = "cdb:signals"
    ML_SIGNALS = "cdb:ml_signals"
    ORDERS = "cdb:orders"
    ORDER_RESULTS = "cdb:order_results"
    ALERTS = "cdb:alerts"
    CONTROL = "cdb:control"
    APPROVALS = "cdb:approvals"
    APPROVAL_DECISIONS = "cdb:approval_decisions"
    DEAD_LETTER = "cdb:dead_letter"


class Event(BaseModel):
    """Fields every event has."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    event_id: str = Field(default_factory=new_event_id, min_length=1, max_length=128)
    schema_version: Literal[1] = SCHEMA_VERSION


class MarketData(Event):
    """A mover in the screener's lookback window, in the seed's shape."""

    type: Literal["market_data"] = "market_data"
    symbol: Symbol
    price: Positive
    volume: NonNegative
    pct_change: Finite
    timestamp: int = Field(ge=0, description="window end, unix seconds")
    interval: str = Field(default="15m", pattern=r"^[0-9]+[mh]$")


class Candle(Event):
    """A closed 1-minute candle from the screener (MEXC kline units)."""

    type: Literal["candle"] = "candle"
    symbol: Symbol
    interval: Literal["Min1"] = "Min1"
    open_time: int = Field(ge=0, description="bar start, unix seconds")
    open: Positive
    high: Positive
    low: Positive
    close: Positive
    volume: NonNegative = Field(description="contracts")
    turnover: NonNegative = Field(description="quote currency (USDT)")


class Signal(Event):
    """A trade idea from the rule strategy (signal_engine)."""

    type: Literal["signal"] = "signal"
    signal_id: str = Field(min_length=1, max_length=128)
    symbol: Symbol
    side: Side
    confidence: Unit
    reason: str = Field(max_length=500)
    strategy: str = Field(default="momentum", max_length=64)
    price: Positive
    pct_change: Finite
    timestamp: float = Field(ge=0, allow_inf_nan=False)


class ShapFeature(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    feature: str = Field(min_length=1, max_length=64)
    value: Finite
    contribution: Finite


class MlSignal(Event):
    """A shadow-mode signal from ml_advisor: logged and counted, never traded."""

    type: Literal["ml_signal"] = "ml_signal"
    signal_id: str = Field(min_length=1, max_length=128)
    symbol: Symbol
    side: Side
    model: str = Field(min_length=1, max_length=64)
    model_version: str = Field(min_length=1, max_length=64)
    confidence: Unit
    price: Positive
    top_features: list[ShapFeature] = Field(default_factory=list, max_length=20)
    timestamp: float = Field(ge=0, allow_inf_nan=False)


class Order(Event):
    """An order the risk manager approved; ``order_id`` is derived from ``signal_id``."""

    type: Literal["order"] = "order"
    order_id: str = Field(min_length=1, max_length=64)
    signal_id: str = Field(min_length=1, max_length=128)
    symbol: Symbol
    side: Side
    quantity: Positive
    notional: Positive
    price: Positive
    stop_loss: Positive
    mode: TradingMode = "paper"
    timestamp: float = Field(ge=0, allow_inf_nan=False)


OrderStatus = Literal["filled", "rejected", "closed", "unknown"]


class OrderResult(Event):
    """What became of an order (``filled``/``rejected``/``unknown``), or a position closed."""

    type: Literal["order_result"] = "order_result"
    order_id: str = Field(min_length=1, max_length=64)
    signal_id: str = Field(default="", max_length=128)
    symbol: Symbol
    side: Side
    status: OrderStatus
    fill_price: NonNegative = 0.0
    quantity: NonNegative = 0.0
    fee: NonNegative = 0.0
    realized_pnl: Finite = 0.0
    reason: str = Field(default="", max_length=500)
    mode: TradingMode = "paper"
    timestamp: float = Field(ge=0, allow_inf_nan=False)


class Alert(Event):
    """A risk event worth a human's attention (circuit breaker, reconciliation, …)."""

    type: Literal["alert"] = "alert"
    kind: str = Field(min_length=1, max_length=64)
    severity: Literal["info", "warning", "critical"] = "warning"
    message: str = Field(max_length=1000)
    source: str = Field(min_length=1, max_length=64)
    details: dict[str, float | str | bool] = Field(default_factory=dict)
    timestamp: float = Field(ge=0, allow_inf_nan=False)


class ControlSettings(BaseModel):
    """Live settings the operator can change; ``None`` means "unchanged"."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    signal_threshold_pct: Positive | None = None
    signal_min_volume: NonNegative | None = None
    lookback_min: Annotated[int, Field(gt=0, le=1440)] | None = None
    paused: bool | None = None
    max_daily_loss_pct: Annotated[float, Field(gt=0, le=100)] | None = None
    max_position_pct: Annotated[float, Field(gt=0, le=100)] | None = None
    max_exposure_pct: Annotated[float, Field(gt=0, le=100)] | None = None
    stop_loss_pct: Annotated[float, Field(gt=0, le=100)] | None = None
    shadow_enabled: bool | None = None
    shadow_confidence_threshold: Unit | None = None
    approval: Literal["auto", "manual"] | None = None
    approval_timeout_s: Annotated[int, Field(ge=5, le=3600)] | None = None


class Control(Event):
    """Live configuration from the operator, applied by every service it concerns."""

    type: Literal["control"] = "control"
    bot: str = Field(min_length=1, max_length=253)
    bot_uid: str = Field(
        default="",
        max_length=64,
        description="the TradingBot's metadata.uid: a bot created again restarts generations",
    )
    generation: int = Field(ge=0)
    config_hash: str = Field(min_length=1, max_length=128)
    settings: ControlSettings
    timestamp: float = Field(ge=0, allow_inf_nan=False)


class ApprovalRequest(Event):
    """An order risk_manager holds in manual approval mode, until approved, vetoed or expired.

    ``order`` is the exact order an approval releases (same ``order_id``); ``event_id`` is
    ``approval-request-<order_id>``, so a republished request is the same event.
    """

    type: Literal["approval_request"] = "approval_request"
    order: Order
    exposure_after_usdt: NonNegative = Field(description="open exposure if this order fills")
    exposure_after_pct: NonNegative = Field(description="the same, in % of equity")
    equity_usdt: NonNegative
    reasons: list[Annotated[str, Field(max_length=500)]] = Field(
        default_factory=list, max_length=20, description="the signal's reason, the rule's numbers"
    )
    expires_at: float = Field(ge=0, allow_inf_nan=False, description="unix seconds")
    timestamp: float = Field(ge=0, allow_inf_nan=False)


class ApprovalDecision(Event):
    """The owner's answer to an :class:`ApprovalRequest` (console or ``cdb approve``/``veto``).

    ``event_id`` is unique per request made by a human (a replayed request keeps its id);
    risk_manager applies at most one decision per order: the first one wins.
    """

    type: Literal["approval_decision"] = "approval_decision"
    order_id: str = Field(min_length=1, max_length=64)
    decision: Literal["approve", "veto"]
    actor: str = Field(min_length=1, max_length=253, description='e.g. "console:owner"')
    reason: str = Field(default="", max_length=500)
    timestamp: float = Field(ge=0, allow_inf_nan=False)


EventModel: TypeAlias = (
    MarketData
    | Candle
    | Signal
    | MlSignal
    | Order
    | OrderResult
    | Alert
    | Control
    | ApprovalRequest
    | ApprovalDecision
)

EVENT_MODELS: dict[str, type[Event]] = {
    "market_data": MarketData,
    "candle": Candle,
    "signal": Signal,
    "ml_signal": MlSignal,
    "order": Order,
    "order_result": OrderResult,
    "alert": Alert,
    "control": Control,
    "approval_request": ApprovalRequest,
    "approval_decision": ApprovalDecision,
}

STREAMS: dict[type[Event], Stream] = {
    MarketData: Stream.MARKET_DATA,
    Candle: Stream.CANDLES,
    Signal: Stream.SIGNALS,
    MlSignal: Stream.ML_SIGNALS,
    Order: Stream.ORDERS,
    OrderResult: Stream.ORDER_RESULTS,
    Alert: Stream.ALERTS,
    Control: Stream.CONTROL,
    ApprovalRequest: Stream.APPROVALS,
    ApprovalDecision: Stream.APPROVAL_DECISIONS,
}

AnyEvent: TypeAdapter[EventModel] = TypeAdapter(Annotated[EventModel, Field(discriminator="type")])


def now() -> float:
    return time.time()
