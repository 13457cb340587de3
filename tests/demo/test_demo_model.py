"""The demo's shadow advisor gets a model on a fresh machine, trained once and then kept."""

from __future__ import annotations

from pathlib import Path

from cdb.demo.model import DEMO_MODEL_VERSION, ensure_demo_model
from cdb.ml_advisor.model_store import list_versions, load_model


def test_a_model_is_trained_once_then_reused(tmp_path: Path) -> None:
    assert ensure_demo_model(tmp_path) == (DEMO_MODEL_VERSION, True)
    (manifest,) = list_versions(tmp_path)
    assert manifest.version == DEMO_MODEL_VERSION and manifest.training_rows > 0
    assert load_model(tmp_path).manifest.version == DEMO_MODEL_VERSION
    assert ensure_demo_model(tmp_path) == (DEMO_MODEL_VERSION, False)
    assert len(list_versions(tmp_path)) == 1
