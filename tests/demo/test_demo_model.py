"""The demo's shadow advisor gets a model on a fresh machine, trained once and then kept."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cdb.demo.model import DEMO_MODEL_VERSION, ensure_demo_model, ensure_demo_model_in_child
from cdb.ml_advisor.model_store import list_versions, load_model


def test_a_model_is_trained_once_then_reused(tmp_path: Path) -> None:
    assert ensure_demo_model(tmp_path) == (DEMO_MODEL_VERSION, True)
    (manifest,) = list_versions(tmp_path)
    assert manifest.version == DEMO_MODEL_VERSION and manifest.training_rows > 0
    assert load_model(tmp_path).manifest.version == DEMO_MODEL_VERSION
    assert ensure_demo_model(tmp_path) == (DEMO_MODEL_VERSION, False)
    assert len(list_versions(tmp_path)) == 1


def test_the_demo_trains_in_a_child_process_and_keeps_the_tree_library_out(
    tmp_path: Path,
) -> None:
    """The supervisor lives as long as the demo: the training's imports and data must not."""
    probe = (
        "import asyncio, json, sys\n"
        "from pathlib import Path\n"
        "from cdb.demo.model import ensure_demo_model_in_child\n"
        f"first = asyncio.run(ensure_demo_model_in_child(Path({str(tmp_path)!r})))\n"
        f"again = asyncio.run(ensure_demo_model_in_child(Path({str(tmp_path)!r})))\n"
        "print(json.dumps([first, again, 'xgboost' in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300
    )
    first, again, imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert first == [DEMO_MODEL_VERSION, True]
    assert again == [DEMO_MODEL_VERSION, False]
    assert imported is False
    assert load_model(tmp_path).manifest.version == DEMO_MODEL_VERSION


def test_a_failed_training_says_why(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the model directory should be")
    with pytest.raises(RuntimeError, match="training the demo model failed"):
        asyncio.run(ensure_demo_model_in_child(blocked))
