"""One prediction with its explanation: confidence, margin and native TreeSHAP contributions.

XGBoost's ``pred_contribs=True`` gives, per feature, its SHAP contribution to the margin
(log-odds) plus a bias column; they sum to the margin the model outputs. The confidence is
the model's probability, the logistic of that margin.

Per candle, :meth:`Predictor.predict` scores the row in place (``inplace_predict`` on the
numpy row: no ``DMatrix``, whose construction and first prediction cost more than the
margin itself) and :meth:`Scored.explain` builds the one-row ``DMatrix`` for TreeSHAP only
when asked: the advisor asks only for a prediction that passed the gate, since a
suppressed one publishes nothing to explain. Per candle, the row carries no feature names
and prediction skips the name check: the names only label the columns, and
:func:`~cdb.ml_advisor.model_store.load_model` set them on the booster from the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xgboost as xgb
from numpy.typing import NDArray

from cdb.core.events import ShapFeature
from cdb.ml_advisor.model_store import INFERENCE_THREADS, LoadedModel

__all__ = ["Explained", "Predictor", "Scored"]


@dataclass(frozen=True)
class Explained:
    """A prediction for one row of features."""

    values: NDArray[np.float64]
    margin: float
    confidence: float
    contributions: NDArray[np.float64]
    bias: float

    def top_features(self, names: list[str], count: int) -> list[ShapFeature]:
        """The ``count`` features with the largest absolute contribution, largest first."""
        order = np.argsort(-np.abs(self.contributions), kind="stable")[:count]
        return [
            ShapFeature(
                feature=names[i],
                value=float(self.values[i]),
                contribution=float(self.contributions[i]),
            )
            for i in order
        ]


def _logistic(margin: np.float64) -> float:
    return float(1.0 / (1.0 + np.exp(-margin)))


class Scored:
    """One row's prediction; its TreeSHAP explanation computed only when asked for."""

    def __init__(self, predictor: Predictor, values: NDArray[np.float64]) -> None:
        self._predictor = predictor
        self.values = values
        margin = np.asarray(
            predictor.model.booster.inplace_predict(
                values.reshape(1, -1), predict_type="margin", validate_features=False
            ),
            np.float64,
        )[0]
        self.margin = float(margin)
        self.confidence = _logistic(margin)

    def explain(self) -> Explained:
        matrix = self._predictor._matrix(self.values, named=False)
        contribs = np.asarray(
            self._predictor.model.booster.predict(
                matrix, pred_contribs=True, validate_features=False
            ),
            np.float64,
        )
        return Explained(
            values=self.values,
            margin=self.margin,
            confidence=self.confidence,
            contributions=contribs[0, :-1],
            bias=float(contribs[0, -1]),
        )


class Predictor:
    """A loaded booster answering for feature rows."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.names = list(model.manifest.features)

    @property
    def version(self) -> str:
        return self.model.manifest.version

    def _matrix(self, rows: NDArray[np.float64], *, named: bool = True) -> xgb.DMatrix:
        # DMatrix takes its own thread count (default: one per core), apart from the
        # booster's: without it each candle's matrix spun up an OpenMP team.
        return xgb.DMatrix(
            np.atleast_2d(rows),
            feature_names=self.names if named else None,
            nthread=INFERENCE_THREADS,
        )

    def predict(self, row: NDArray[np.float64]) -> Scored:
        """One feature row (a candle): its margin and confidence now, SHAP on request."""
        return Scored(self, np.atleast_2d(row)[0])

    def explain_many(self, rows: NDArray[np.float64]) -> list[Explained]:
        matrix = self._matrix(rows)
        margins = np.asarray(self.model.booster.predict(matrix, output_margin=True), np.float64)
        contribs = np.asarray(self.model.booster.predict(matrix, pred_contribs=True), np.float64)
        rows2d = np.atleast_2d(rows)
        return [
            Explained(
                values=rows2d[i],
                margin=float(margins[i]),
                confidence=_logistic(margins[i]),
                contributions=contribs[i, :-1],
                bias=float(contribs[i, -1]),
            )
            for i in range(rows2d.shape[0])
        ]

    def explain(self, row: NDArray[np.float64]) -> Explained:
        return self.predict(row).explain()

    def confidences(self, rows: NDArray[np.float64]) -> NDArray[np.float64]:
        """Probabilities for many rows at once (evaluation)."""
        return np.asarray(self.model.booster.predict(self._matrix(rows)), np.float64)
