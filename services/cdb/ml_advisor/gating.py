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

__all__ = ["PHYSICAL_RANGES", "Suppression", "check_features", "gate"]


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


def check_features(
    values: NDArray[np.float64],
    names: Sequence[str],
    stats: Mapping[str, FeatureStats],
    outlier_span: float,
) -> tuple[Suppression, str] | None:
    """The first sanity problem with a feature row (reason, feature name), or None."""
    if not np.isfinite(values).all():
        return Suppression.NAN_FEATURE, names[int(np.argmin(np.isfinite(values)))]
    for name, value in zip(names, values, strict=True):
        low, high = PHYSICAL_RANGES.get(name, (-math.inf, math.inf))
        if not low <= value <= high:
            return Suppression.OUT_OF_RANGE, name
    for name, value in zip(names, values, strict=True):
        known = stats.get(name)
        if known is None:
            continue
        width = known.maximum - known.minimum
        if width <= 0:
            continue
        if (
            value < known.minimum - outlier_span * width
            or value > known.maximum + outlier_span * width
        ):
            return Suppression.OUTLIER, name
    return None


def gate(confidence: float, *, threshold: float, enabled: bool) -> Suppression | None:
    """Shadow mode on and confidence above the threshold, else why not."""
    if not enabled:
        return Suppression.DISABLED
    if confidence <= threshold:
        return Suppression.BELOW_THRESHOLD
    return None
