"""A model for the demo's shadow advisor, so ``ml_signals`` appear on a fresh machine.

The newest version under the demo's model directory is used; when there is none, one is
trained now on a seeded synthetic history (two days of eight symbols, about 3 s on one
core) — the same ``cdb ml synth`` + ``cdb ml train`` a user would run, in-process.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEMO_MODEL_VERSION", "ensure_demo_model"]

DEMO_MODEL_VERSION = "demo-synthetic-1"


def ensure_demo_model(model_dir: Path) -> tuple[str, bool]:
    """(version, trained now): the version the advisor will load from ``model_dir``."""
    from cdb.ml_advisor.model_store import list_versions, save_artifact

    versions = list_versions(model_dir)
    if versions:
        return versions[-1].version, False
    from cdb.ml_advisor.synthetic import generate_history
    from cdb.ml_advisor.training import TrainingConfig, train_model

    history = generate_history(symbols=8, minutes=2 * 1440, seed=7)
    result = train_model(history, TrainingConfig(seed=42, folds=2), version=DEMO_MODEL_VERSION)
    save_artifact(model_dir, result.manifest, result.booster)
    return DEMO_MODEL_VERSION, True
