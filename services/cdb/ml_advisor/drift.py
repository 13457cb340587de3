"""Feature drift: the population stability index (PSI) of live features against training.

PSI = Σ (live_share - train_share) · ln(live_share / train_share) over the training
deciles of a feature. Rules of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 the live
market no longer looks like the training data (retrain or distrust the model).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from cdb.ml_advisor.model_store import FeatureStats

__all__ = ["DriftWindow", "population_stability_index"]

SHARE_FLOOR = 1e-4


def population_stability_index(values: NDArray[np.float64], stats: FeatureStats) -> float:
    edges = np.asarray(stats.bin_edges, dtype=np.float64)
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    live = np.maximum(counts / max(values.shape[0], 1), SHARE_FLOOR)
    train = np.maximum(np.asarray(stats.bin_fractions, dtype=np.float64), SHARE_FLOOR)
    return float(np.sum((live - train) * np.log(live / train)))


class DriftWindow:
    """The last ``size`` live feature rows, and their PSI per feature."""

    def __init__(self, names: Sequence[str], size: int) -> None:
        self.names = list(names)
        self.rows: deque[NDArray[np.float64]] = deque(maxlen=size)

    def add(self, row: NDArray[np.float64]) -> None:
        if np.isfinite(row).all():
            self.rows.append(row)

    def psi(self, stats: Mapping[str, FeatureStats], min_rows: int) -> dict[str, float]:
        """PSI per feature, or nothing until ``min_rows`` rows are in."""
        if len(self.rows) < min_rows:
            return {}
        matrix = np.vstack(self.rows)
        return {
            name: population_stability_index(matrix[:, i], stats[name])
            for i, name in enumerate(self.names)
            if name in stats
        }
