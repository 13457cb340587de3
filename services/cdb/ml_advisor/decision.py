"""One candle's decision, without I/O: features → sanity checks → prediction → gate →
TreeSHAP → the shadow signal.

:class:`Decider` is the whole per-candle computation of the advisor; the service adds the
bus, the metrics and the logs around it, and ``bench/bench_ml.py`` times exactly this.
TreeSHAP runs only for a prediction that passed the gate: a suppressed one publishes
nothing to explain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from cdb.core.events import Candle, MlSignal, deterministic_id
from cdb.ml_advisor.gating import FeatureChecks, Suppression, gate
from cdb.ml_advisor.inference import Predictor
from cdb.ml_advisor.live_state import CandleWindow
from cdb.ml_advisor.model_store import MODEL_NAME

__all__ = ["BAR_SECONDS", "Decider", "Decision"]

BAR_SECONDS = 60


@dataclass(frozen=True)
class Decision:
    """What one candle came to: a signal, or the reason there is none."""

    row: NDArray[np.float64]
    signal: MlSignal | None = None
    suppressed: Suppression | None = None
    feature: str | None = None  # the feature a sanity check stopped at
    predicted: bool = False  # the model was asked (the sanity checks passed)


class Decider:
    """The per-candle decision for one loaded model."""

    def __init__(self, predictor: Predictor, *, outlier_span: float, top_features: int) -> None:
        self.predictor = predictor
        self.checks = FeatureChecks(
            predictor.names, predictor.model.manifest.feature_stats, outlier_span
        )
        self.top_features = top_features

    def decide(
        self, candle: Candle, window: CandleWindow, rank: float, *, threshold: float, enabled: bool
    ) -> Decision:
        """The decision for ``candle``, the newest bar of ``window`` (which is ready)."""
        predictor = self.predictor
        row = window.features(rank)
        problem = self.checks.first_problem(row)
        if problem is not None:
            return Decision(row, suppressed=problem[0], feature=problem[1])
        scored = predictor.predict(row)
        blocked = gate(scored.confidence, threshold=threshold, enabled=enabled)
        if blocked is not None:
            return Decision(row, suppressed=blocked, predicted=True)
        explained = scored.explain()
        version = predictor.version
        signal_id = deterministic_id("ml", version, candle.symbol, candle.open_time)
        signal = MlSignal(
            event_id=signal_id,
            signal_id=signal_id,
            symbol=candle.symbol,
            side="long",
            model=MODEL_NAME,
            model_version=version,
            confidence=round(explained.confidence, 6),
            price=candle.close,
            top_features=explained.top_features(predictor.names, self.top_features),
            timestamp=float(candle.open_time + BAR_SECONDS),
        )
        return Decision(row, signal=signal, predicted=True)
