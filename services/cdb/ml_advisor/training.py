"""Training: walk-forward validation without look-ahead, then one model on all labelled bars.

Walk-forward: the labelled bars are cut by time into ``folds + 1`` contiguous blocks. Fold
``k`` trains on everything before block ``k`` and validates on block ``k``. A bar's label
looks ``horizon`` minutes ahead, so training bars closer than that to the validation block
are dropped (the embargo): no training label ever sees a validation price.

Training is deterministic for a seed: the same history, seed and parameters give the same
booster, byte for byte (``tree_method=hist``, a fixed thread count).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import xgboost as xgb
from numpy.typing import NDArray

from cdb.ml_advisor.candle_history import history_hash
from cdb.ml_advisor.dataset import LabelSpec, build_dataset
from cdb.ml_advisor.features import FEATURES
from cdb.ml_advisor.model_store import (
    FeatureStats,
    FoldMetrics,
    ModelManifest,
    TrainingMetrics,
)

__all__ = [
    "TrainingConfig",
    "TrainingError",
    "TrainingResult",
    "auc_score",
    "feature_stats",
    "train_model",
    "walk_forward_splits",
]

BAR_SECONDS = 60


class TrainingError(ValueError):
    """The history cannot train a model (too short, no positive label, …)."""


@dataclass(frozen=True)
class TrainingConfig:
    seed: int = 42
    num_boost_round: int = 200
    max_depth: int = 4
    eta: float = 0.05
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    min_child_weight: float = 5.0
    nthread: int = 1
    folds: int = 4
    threshold: float = 0.7
    label: LabelSpec = field(default_factory=LabelSpec)

    def params(self) -> dict[str, float | int | str]:
        return {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.eta,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "seed": self.seed,
            "nthread": self.nthread,
        }


@dataclass(frozen=True)
class TrainingResult:
    booster: xgb.Booster
    manifest: ModelManifest
    dataset: pd.DataFrame


def auc_score(labels: NDArray[np.float64], scores: NDArray[np.float64]) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties averaged); None with one class only."""
    positives = int(labels.sum())
    negatives = labels.shape[0] - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    rank_sum = float(ranks[labels == 1].sum())
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def _logloss(labels: NDArray[np.float64], probs: NDArray[np.float64]) -> float:
    clipped = np.clip(probs, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))


def walk_forward_splits(
    times: NDArray[np.int64], folds: int, embargo_s: int
) -> list[tuple[NDArray[np.bool_], NDArray[np.bool_]]]:
    """(train mask, validation mask) per fold; every training bar ends ``embargo_s`` early."""
    unique = np.unique(times)
    if unique.shape[0] < (folds + 1) * 2:
        raise TrainingError(f"history too short for {folds} walk-forward folds")
    blocks = np.array_split(unique, folds + 1)
    splits = []
    for k in range(1, folds + 1):
        start, end = int(blocks[k][0]), int(blocks[k][-1])
        train = times < start - embargo_s
        validation = (times >= start) & (times <= end)
        splits.append((train, validation))
    return splits


def feature_stats(values: NDArray[np.float64]) -> FeatureStats:
    """Range, quantiles and decile bins of one feature over the training rows."""
    edges = np.unique(np.quantile(values, np.linspace(0.1, 0.9, 9)))
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return FeatureStats(
        minimum=float(values.min()),
        maximum=float(values.max()),
        q001=float(np.quantile(values, 0.001)),
        q999=float(np.quantile(values, 0.999)),
        median=float(np.median(values)),
        bin_edges=[float(e) for e in edges],
        bin_fractions=[float(c) / values.shape[0] for c in counts],
    )


def _fit(config: TrainingConfig, x: pd.DataFrame, y: NDArray[np.float64]) -> xgb.Booster:
    matrix = xgb.DMatrix(x.to_numpy(np.float64), label=y, feature_names=list(FEATURES))
    return xgb.train(config.params(), matrix, num_boost_round=config.num_boost_round)


def _predict(booster: xgb.Booster, x: pd.DataFrame) -> NDArray[np.float64]:
    matrix = xgb.DMatrix(x.to_numpy(np.float64), feature_names=list(FEATURES))
    return np.asarray(booster.predict(matrix), dtype=np.float64)


def _fold_metrics(
    fold: int,
    config: TrainingConfig,
    train: pd.DataFrame,
    validation: pd.DataFrame,
) -> FoldMetrics:
    y_train = train["label"].to_numpy(np.float64)
    if y_train.sum() == 0:
        raise TrainingError(f"fold {fold}: no positive label in the training part")
    booster = _fit(config, train[list(FEATURES)], y_train)
    probs = _predict(booster, validation[list(FEATURES)])
    y_val = validation["label"].to_numpy(np.float64)
    chosen = probs > config.threshold
    return FoldMetrics(
        fold=fold,
        train_rows=int(train.shape[0]),
        validation_rows=int(validation.shape[0]),
        train_end=int(train["time"].max()),
        validation_start=int(validation["time"].min()),
        validation_end=int(validation["time"].max()),
        auc=auc_score(y_val, probs),
        logloss=_logloss(y_val, probs),
        base_rate=float(y_val.mean()),
        precision_at_threshold=float(y_val[chosen].mean()) if chosen.any() else None,
        signals_at_threshold=int(chosen.sum()),
    )


def train_model(
    history: pd.DataFrame, config: TrainingConfig, *, version: str | None = None
) -> TrainingResult:
    """Walk-forward metrics, then the final booster on all labelled bars, and its manifest."""
    data_hash = history_hash(history)
    dataset = build_dataset(history, config.label)
    labelled = dataset[~dataset["label"].isna() & ~dataset["filled"]].reset_index(drop=True)
    if labelled.empty:
        raise TrainingError("no labelled bars: each symbol needs more than 2 hours of candles")
    y = labelled["label"].to_numpy(np.float64)
    if y.sum() == 0:
        raise TrainingError(
            f"no bar reached +{config.label.min_return_pct}% within "
            f"{config.label.horizon_min} min: nothing to learn"
        )
    embargo_s = config.label.horizon_min * BAR_SECONDS
    times = labelled["time"].to_numpy(np.int64)
    folds = []
    for index, (train_mask, val_mask) in enumerate(
        walk_forward_splits(times, config.folds, embargo_s), start=1
    ):
        folds.append(_fold_metrics(index, config, labelled[train_mask], labelled[val_mask]))
    aucs = [f.auc for f in folds if f.auc is not None]
    metrics = TrainingMetrics(
        folds=folds,
        mean_auc=float(np.mean(aucs)) if aucs else None,
        mean_logloss=float(np.mean([f.logloss for f in folds])),
        threshold=config.threshold,
        embargo_min=config.label.horizon_min,
    )
    booster = _fit(config, labelled[list(FEATURES)], y)
    created = time.time()
    stamp = datetime.fromtimestamp(created, UTC).strftime("%Y%m%dT%H%M%SZ")
    manifest = ModelManifest(
        version=version or f"{stamp}-{data_hash[:8]}",
        created_at=created,
        features=list(FEATURES),
        training_data_hash=data_hash,
        training_rows=int(labelled.shape[0]),
        training_symbols=sorted(labelled["symbol"].unique().tolist()),
        training_start=int(history["time"].min()),
        training_end=int(history["time"].max()),
        label_horizon_min=config.label.horizon_min,
        label_min_return_pct=config.label.min_return_pct,
        seed=config.seed,
        num_boost_round=config.num_boost_round,
        params=config.params(),
        metrics=metrics,
        feature_stats={
            name: feature_stats(labelled[name].to_numpy(np.float64)) for name in FEATURES
        },
        xgboost_version=xgb.__version__,
    )
    return TrainingResult(booster=booster, manifest=manifest, dataset=labelled)
