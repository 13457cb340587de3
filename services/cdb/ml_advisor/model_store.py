"""Versioned model artifacts under ``ML_MODEL_DIR`` (default ``/data/models``).

One directory per version::

    <ML_MODEL_DIR>/<version>/model.json      the XGBoost booster (JSON, diff-able)
    <ML_MODEL_DIR>/<version>/manifest.json   features, training-data hash, params, metrics,
                                             training feature distributions (for drift)

A version is written to a temporary directory and renamed into place, so a reader never
sees half an artifact. "Latest" is the newest ``created_at``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import xgboost as xgb
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "MODEL_NAME",
    "FeatureStats",
    "FoldMetrics",
    "LoadedModel",
    "ModelManifest",
    "ModelStoreError",
    "TrainingMetrics",
    "list_versions",
    "load_model",
    "save_artifact",
]

MODEL_NAME = "xgboost-momentum"
INFERENCE_THREADS = 1  # per-candle inference: one row at a time, pinned to one thread
MODEL_FILE = "model.json"
MANIFEST_FILE = "manifest.json"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class ModelStoreError(Exception):
    """No such version, or an artifact that cannot be read."""


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureStats(Frozen):
    """A feature's training distribution: range checks and the PSI reference."""

    minimum: float
    maximum: float
    q001: float
    q999: float
    median: float
    bin_edges: list[float] = Field(description="inner edges of the PSI bins (deciles)")
    bin_fractions: list[float] = Field(description="training share per bin, len(edges)+1")


class FoldMetrics(Frozen):
    fold: int
    train_rows: int
    validation_rows: int
    train_end: int = Field(description="last training bar (unix s)")
    validation_start: int
    validation_end: int
    auc: float | None
    logloss: float
    base_rate: float
    precision_at_threshold: float | None
    signals_at_threshold: int


class TrainingMetrics(Frozen):
    folds: list[FoldMetrics]
    mean_auc: float | None
    mean_logloss: float
    threshold: float
    embargo_min: int


class ModelManifest(Frozen):
    name: str = MODEL_NAME
    version: str = Field(pattern=VERSION_PATTERN)
    created_at: float
    features: list[str]
    training_data_hash: str
    training_rows: int
    training_symbols: list[str]
    training_start: int
    training_end: int
    label_horizon_min: int
    label_min_return_pct: float
    seed: int
    num_boost_round: int
    params: dict[str, float | int | str]
    metrics: TrainingMetrics
    feature_stats: dict[str, FeatureStats]
    xgboost_version: str


@dataclass(frozen=True)
class LoadedModel:
    manifest: ModelManifest
    booster: xgb.Booster
    path: Path


def save_artifact(model_dir: Path, manifest: ModelManifest, booster: xgb.Booster) -> Path:
    """Write ``<model_dir>/<version>/`` atomically; an existing version is never overwritten."""
    target = model_dir / manifest.version
    if target.exists():
        raise ModelStoreError(f"model version {manifest.version!r} already exists at {target}")
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{manifest.version}-", dir=model_dir))
    try:
        booster.save_model(str(staging / MODEL_FILE))
        (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
        for path in staging.iterdir():
            path.chmod(0o644)
        staging.chmod(0o755)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _read_manifest(directory: Path) -> ModelManifest | None:
    try:
        return ModelManifest.model_validate_json((directory / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None


def list_versions(model_dir: Path) -> list[ModelManifest]:
    """Every readable version, oldest first."""
    if not model_dir.is_dir():
        return []
    manifests = [
        manifest
        for entry in model_dir.iterdir()
        if entry.is_dir()
        and re.match(VERSION_PATTERN, entry.name)
        and not entry.name.startswith(".")
        if (manifest := _read_manifest(entry)) is not None
    ]
    return sorted(manifests, key=lambda m: (m.created_at, m.version))


def load_model(model_dir: Path, version: str | None = None) -> LoadedModel:
    """The named version, or the latest when ``version`` is None."""
    if version is None:
        versions = list_versions(model_dir)
        if not versions:
            raise ModelStoreError(f"no trained model under {model_dir} (run: cdb ml train)")
        version = versions[-1].version
    directory = model_dir / version
    manifest = _read_manifest(directory)
    if manifest is None:
        available = ", ".join(m.version for m in list_versions(model_dir)) or "none"
        raise ModelStoreError(
            f"no model version {version!r} under {model_dir} (available: {available})"
        )
    booster = xgb.Booster()
    try:
        booster.load_model(str(directory / MODEL_FILE))
    except xgb.core.XGBoostError as error:
        raise ModelStoreError(f"{directory / MODEL_FILE}: unreadable model: {error}") from None
    booster.feature_names = list(manifest.features)
    # One prediction is one row: a thread pool only adds hand-offs, and with the other
    # services busy OpenMP's default (a thread per core) made inference 17x slower.
    booster.set_param({"nthread": INFERENCE_THREADS})
    return LoadedModel(manifest=manifest, booster=booster, path=directory)
