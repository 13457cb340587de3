"""Whether a prediction becomes a shadow signal: sanity checks first, then the gate.

A suppressed prediction is counted by reason (``ml_signals_suppressed_total{reason}``):

* ``nan_feature`` — a feature is NaN or infinite;
* ``out_of_range`` — a feature outside what it can physically be (a range position above 1);
* ``outlier`` — a feature far outside what the model saw in training (more than
  ``span`` times the training range beyond its minimum or maximum): the model would be
  extrapolating, so it says nothing;
* ``disabled`` — shadow mode switched off (``shadow_enabled``);
* ``below_threshold`` - confidence not above ``shadow_confidence_threshold`` (the seed:
  "only signals > 0.7");
* ``no_model`` — no trained model loaded yet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from cdb.ml_advisor.model_store import FeatureStats

__all__ = ["PHYSICAL_RANGES", "FeatureChecks", "Suppression", "gate"]


class Suppression(StrEnum):
    NAN_FEATURE = "nan_feature"
    OUT_OF_RANGE = "out_of_range"
    OUTLIER = "outlier"
    DISABLED = "disabled"
    BELOW_THRESHOLD = "below_threshold"
    NO_MODEL = "no_model"


PHYSICAL_RANGES: dict[str, tuple[float, float]] = {
    "ret_1m": (-100.0, math.inf),
    "ret_5m": (-100.0, math.inf),
    "ret_15m": (-100.0, math.inf),
    "ret_60m": (-100.0, math.inf),
    "turnover_15m_log": (0.0, math.inf),
    "volume_z_15m": (-math.inf, math.inf),
    "volatility_15m": (0.0, math.inf),
    "volatility_60m": (0.0, math.inf),
    "range_pos_60m": (0.0, 1.0),
    "bar_range_pct": (0.0, 100.0),
    "mover_rank": (-1.0, 1.0),
}


class FeatureChecks:
    """The sanity checks for one model's features, bounds worked out once (per model, not
    per candle) and compared as arrays."""

    def __init__(
        self, names: Sequence[str], stats: Mapping[str, FeatureStats], outlier_span: float
    ) -> None:
        self.names = list(names)
        physical = [PHYSICAL_RANGES.get(name, (-math.inf, math.inf)) for name in self.names]
        self.low = np.array([low for low, _ in physical], dtype=np.float64)
        self.high = np.array([high for _, high in physical], dtype=np.float64)
        outlier: list[tuple[float, float]] = []
        for name in self.names:
            known = stats.get(name)
            width = known.maximum - known.minimum if known is not None else 0.0
            if known is None or width <= 0:
                outlier.append((-math.inf, math.inf))
            else:
                outlier.append(
                    (
                        known.minimum - outlier_span * width,
                        known.maximum + outlier_span * width,
                    )
                )
        self.outlier_low = np.array([low for low, _ in outlier], dtype=np.float64)
        self.outlier_high = np.array([high for _, high in outlier], dtype=np.float64)

    def first_problem(self, values: NDArray[np.float64]) -> tuple[Suppression, str] | None:
        """The first sanity problem with a feature row (reason, feature name), or None."""
        finite = np.isfinite(values)
        if not finite.all():
            return Suppression.NAN_FEATURE, self.names[int(np.argmin(finite))]
        outside = (values < self.low) | (values > self.high)
        if outside.any():
            return Suppression.OUT_OF_RANGE, self.names[int(np.argmax(outside))]
        outside = (values < self.outlier_low) | (values > self.outlier_high)
        if outside.any():
            return Suppression.OUTLIER, self.names[int(np.argmax(outside))]
        return None


def gate(confidence: float, *, threshold: float, enabled: bool) -> Suppression | None:
    """Shadow mode on and confidence above the threshold, else why not."""
    if not enabled:
        return Suppression.DISABLED
    if confidence <= threshold:
        return Suppression.BELOW_THRESHOLD
    return None
