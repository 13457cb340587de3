"""The advisor: candles in, explained shadow signals out, never an order.

Per closed candle from ``cdb:candles``: update the symbol's window, compute the features,
run the sanity checks, predict, gate at the live confidence threshold, explain a prediction
that passed with TreeSHAP contributions and publish it as an ``MlSignal`` on
``cdb:ml_signals`` (:class:`~cdb.ml_advisor.decision.Decider`); then store the candle
(``candles`` table, for training and the outcome view) before it is acknowledged; the
signal does not wait for that write. ``cdb:market_data`` gives the movers rank;
``cdb:control`` switches shadow mode and the threshold live. The signal id is derived
from model version, symbol and bar, so a redelivered candle (after a failed write, say)
republishes the same signal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Self

from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge, Histogram
from pydantic import model_validator

from cdb.core.bus import PRICE_DONE_TTL_S, Consumer, sleep_unless
from cdb.core.control import AppliedControl, apply_control, load_control
from cdb.core.events import Candle, Control, MarketData, MlSignal, Stream
from cdb.core.metrics import LATENCY_BUCKETS
from cdb.core.service import Kernel, Service, public_config
from cdb.ml_advisor.candle_store import load_recent, save_candle
from cdb.ml_advisor.decision import Decider
from cdb.ml_advisor.drift import DriftWindow
from cdb.ml_advisor.features import FEATURES, WARMUP_BARS
from cdb.ml_advisor.gating import Suppression
from cdb.ml_advisor.inference import Predictor
from cdb.ml_advisor.live_state import Accepted, CandleWindow, MoversBoard
from cdb.ml_advisor.model_store import ModelStoreError, list_versions, load_model
from cdb.ml_advisor.settings import MlAdvisorSettings
from cdb.ml_advisor.warmup import KlineWarmup

__all__ = ["CheckedCandle", "MlAdvisor"]

log = logging.getLogger("cdb.ml_advisor")


class CheckedCandle(Candle):
    """A candle whose prices agree with each other; anything else is dead-lettered."""

    @model_validator(mode="after")
    def prices_consistent(self) -> Self:
        if self.high < self.low:
            raise ValueError(f"high {self.high} < low {self.low}")
        if not (self.low <= self.open <= self.high and self.low <= self.close <= self.high):
            raise ValueError("open and close must lie within [low, high]")
        return self


@dataclass
class ShadowGate:
    """The live shadow settings: the service's settings, overridden by what the operator
    set (the kernel's :class:`~cdb.core.control.AppliedControl`, kept in PostgreSQL)."""

    enabled: bool
    threshold: float
    control: AppliedControl | None = None

    @property
    def generation(self) -> int:
        return self.control.generation if self.control is not None else -1

    def adopt(self, control: AppliedControl | None) -> bool:
        """Take ``control``'s shadow settings unless it is no newer than the one in force."""
        if control is None or not control.supersedes(self.control):
            return False
        if control.settings.shadow_enabled is not None:
            self.enabled = control.settings.shadow_enabled
        if control.settings.shadow_confidence_threshold is not None:
            self.threshold = control.settings.shadow_confidence_threshold
        self.control = control
        return True


class AdvisorMetrics:
    """ml_advisor's own metrics (docs/METRICS.md, ml_advisor section)."""

    def __init__(self, registry: Any) -> None:
        self.published = PromCounter(
            "ml_signals_published_total", "Shadow ML signals published", registry=registry
        )
        self.suppressed = PromCounter(
            "ml_signals_suppressed_total",
            "Predictions not published, by reason",
            ["reason"],
            registry=registry,
        )
        self.inference_seconds = Histogram(
            "ml_inference_seconds",
            "Features + prediction for one candle, + TreeSHAP and the signal when it passes",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.drift = Gauge(
            "ml_feature_drift",
            "Population stability index of live features vs training",
            ["feature"],
            registry=registry,
        )
        for reason in Suppression:
            self.suppressed.labels(reason.value)


class MlAdvisor(Service[MlAdvisorSettings]):
    name = "ml_advisor"

    def __init__(self, settings: MlAdvisorSettings, kernel: Kernel) -> None:
        super().__init__(settings, kernel)
        self.metrics = AdvisorMetrics(kernel.metrics.registry)
        self.shadow = ShadowGate(settings.shadow_enabled, settings.shadow_confidence_threshold)
        self.windows: dict[str, CandleWindow] = {}
        self.movers = MoversBoard(settings.ml_movers_max_age_s)
        self.drift_window = DriftWindow(FEATURES, settings.ml_drift_window)
        self.drift: dict[str, float] = {}
        self.predictor: Predictor | None = None
        self.decider: Decider | None = None
        self.model_error: str | None = None
        self.candles: Counter[str] = Counter()
        self.suppressed: Counter[str] = Counter()
        self.published = 0
        self.last_signal_at: float | None = None
        self.warmup = KlineWarmup(settings.bot_rest_url) if settings.bot_rest_url else None

    # --- start-up -------------------------------------------------------------------

    async def start(self) -> None:
        await self._load_model(self.settings.ml_model_version)
        await self._restore_control()
        if self.settings.ml_persist_candles:
            for candle in await load_recent(self.kernel.database, WARMUP_BARS):
                self._window(candle.symbol).add(candle)
        log.info(
            "ml_advisor ready",
            extra={
                "model_version": self.predictor.version if self.predictor else None,
                "warm_symbols": len(self.windows),
                "shadow_enabled": self.shadow.enabled,
                "threshold": self.shadow.threshold,
            },
        )

    async def _load_model(self, version: str | None) -> None:
        try:
            model = await asyncio.to_thread(load_model, self.settings.ml_model_dir, version)
        except ModelStoreError as error:
            self.model_error = str(error)
            log.warning("no model loaded", extra={"error": self.model_error})
            return
        self.predictor = Predictor(model)
        self.decider = Decider(
            self.predictor,
            outlier_span=self.settings.ml_outlier_span,
            top_features=self.settings.ml_top_features,
        )
        self.drift_window = DriftWindow(model.manifest.features, self.settings.ml_drift_window)
        self.drift = {}
        self.model_error = None
        log.info("model loaded", extra={"model_version": model.manifest.version})

    async def _restore_control(self) -> None:
        """What the operator set, from ``control_state``, so a restart keeps it."""
        if self.shadow.adopt(await load_control(self.kernel.database, self.name)):
            log.info("live config restored", extra={"generation": self.shadow.generation})

    # --- consumers and tasks ----------------------------------------------------------

    def consumers(self) -> Sequence[Consumer[Any]]:
        return [
            self.consumer(
                Stream.CANDLES, CheckedCandle, self.on_candle, done_ttl_s=PRICE_DONE_TTL_S
            ),
            self.consumer(
                Stream.MARKET_DATA,
                MarketData,
                self.on_market_data,
                touches_health=False,
                done_ttl_s=PRICE_DONE_TTL_S,
            ),
            self.consumer(Stream.CONTROL, Control, self.on_control, touches_health=False),
        ]

    def tasks(self) -> Sequence[Callable[[], Coroutine[Any, Any, None]]]:
        return [self.update_drift, self.reload_model]

    async def on_market_data(self, event: MarketData) -> None:
        self.movers.add(event)

    async def on_control(self, event: Control) -> None:
        applied = await apply_control(self.kernel.database, self.name, event)
        if applied is None:
            log.info("stale control event ignored", extra={"generation": event.generation})
        elif self.shadow.adopt(applied):
            log.info(
                "control applied",
                extra={
                    "generation": event.generation,
                    "shadow_enabled": self.shadow.enabled,
                    "threshold": self.shadow.threshold,
                },
            )

    async def on_candle(self, candle: CheckedCandle) -> None:
        await self._warm_up(candle)
        window = self._window(candle.symbol)
        accepted = window.add(candle)
        outcome: str | None = None
        if accepted is Accepted.STALE:
            pass
        elif not window.ready:
            outcome = "warming_up"
        elif self.predictor is None:
            self._suppress(Suppression.NO_MODEL)
        elif (signal := self.decide(candle, window)) is not None:
            await self.kernel.bus.publish(signal)
            self.metrics.published.inc()
            self.published += 1
            self.last_signal_at = time.time()
        # Stored after the signal is out (it does not need the row), before the ack.
        if self.settings.ml_persist_candles:
            await save_candle(self.kernel.database, candle)
        self.candles[accepted.value] += 1
        if outcome is not None:
            self.candles[outcome] += 1

    async def _warm_up(self, candle: Candle) -> None:
        """Once per symbol: the minutes its window lacks, from bot_rest's klines."""
        window = self._window(candle.symbol)
        if self.warmup is None or window.ready or not self.warmup.wants(candle.symbol):
            return
        earliest = candle.open_time - WARMUP_BARS * 60
        last = window.last_open_time
        first = earliest if last is None else max(earliest, last + 60)
        bars = await self.warmup.history(candle.symbol, first, candle.open_time)
        for bar in bars:
            window.add(bar)
            if self.settings.ml_persist_candles:
                await save_candle(self.kernel.database, bar)
        self.candles["warmed_from_rest"] += len(bars)

    async def close(self) -> None:
        if self.warmup is not None:
            await self.warmup.close()

    def decide(self, candle: Candle, window: CandleWindow) -> MlSignal | None:
        """Features → sanity → prediction → gate → SHAP; the signal to publish, or None."""
        if self.decider is None:
            raise RuntimeError("decide() before a model was loaded")
        started = time.perf_counter()
        decision = self.decider.decide(
            candle,
            window,
            self.movers.rank(candle.symbol, candle.open_time),
            threshold=self.shadow.threshold,
            enabled=self.shadow.enabled,
        )
        if decision.predicted:
            self.metrics.inference_seconds.observe(time.perf_counter() - started)
        self.drift_window.add(decision.row)
        if decision.suppressed is not None:
            self._suppress(decision.suppressed)
            if decision.feature is not None:
                log.info(
                    "prediction suppressed by a sanity check",
                    extra={
                        "symbol": candle.symbol,
                        "reason": decision.suppressed.value,
                        "feature": decision.feature,
                    },
                )
        return decision.signal

    async def update_drift(self) -> None:
        while not self.kernel.stop.is_set():
            await sleep_unless(self.kernel.stop, self.settings.ml_drift_interval_s)
            self.refresh_drift()

    def refresh_drift(self) -> None:
        if self.predictor is None:
            return
        stats = self.predictor.model.manifest.feature_stats
        self.drift = self.drift_window.psi(stats, self.settings.ml_drift_min_rows)
        for feature, value in self.drift.items():
            self.metrics.drift.labels(feature).set(value)

    async def reload_model(self) -> None:
        """An unpinned advisor switches to a newer model as soon as one is trained."""
        if self.settings.ml_model_version is not None:
            return
        while not self.kernel.stop.is_set():
            await sleep_unless(self.kernel.stop, self.settings.ml_model_reload_s)
            versions = await asyncio.to_thread(list_versions, self.settings.ml_model_dir)
            newest = versions[-1].version if versions else None
            current = self.predictor.version if self.predictor else None
            if newest is not None and newest != current:
                await self._load_model(newest)

    # --- state ---------------------------------------------------------------------------

    def _window(self, symbol: str) -> CandleWindow:
        window = self.windows.get(symbol)
        if window is None:
            window = self.windows[symbol] = CandleWindow()
        return window

    def _suppress(self, reason: Suppression) -> None:
        self.metrics.suppressed.labels(reason.value).inc()
        self.suppressed[reason.value] += 1

    def status(self) -> dict[str, Any]:
        model: dict[str, Any] | None = None
        if self.predictor is not None:
            manifest = self.predictor.model.manifest
            model = {
                "name": manifest.name,
                "version": manifest.version,
                "created_at": manifest.created_at,
                "training_data_hash": manifest.training_data_hash,
                "training_rows": manifest.training_rows,
                "features": manifest.features,
                "walk_forward_mean_auc": manifest.metrics.mean_auc,
                "pinned": self.settings.ml_model_version is not None,
            }
        return {
            "config": public_config(self.settings),
            "model": model,
            "model_error": self.model_error,
            "shadow": {
                "enabled": self.shadow.enabled,
                "confidence_threshold": self.shadow.threshold,
                "control_generation": self.shadow.generation,
                "trades": False,
            },
            "symbols": len(self.windows),
            "ready_symbols": sum(1 for w in self.windows.values() if w.ready),
            "candles": dict(self.candles),
            "signals_published": self.published,
            "signals_suppressed": dict(self.suppressed),
            "last_signal_at": self.last_signal_at,
            "feature_drift_psi": {k: round(v, 4) for k, v in self.drift.items()},
        }
