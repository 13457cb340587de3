"""A model for the demo's shadow advisor, so ``ml_signals`` appear on a fresh machine.

The newest version under the demo's model directory is used; when there is none, one is
trained on a seeded synthetic history (two days of eight symbols, about 3 s on one core)
— the same ``cdb ml synth`` + ``cdb ml train`` a user would run. The demo does this in a
child process (``python -m cdb.demo.model DIR``): the tree library and the training data
(about 200 MiB on first start) then never live in the long-running supervisor.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

__all__ = ["DEMO_MODEL_VERSION", "ensure_demo_model", "ensure_demo_model_in_child"]

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


async def ensure_demo_model_in_child(model_dir: Path) -> tuple[str, bool]:
    """:func:`ensure_demo_model` in a child process; its error output on failure."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cdb.demo.model",
        str(model_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate()
    if child.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(
            f"training the demo model failed (exit {child.returncode}): " + " | ".join(tail)
        )
    answer = json.loads(out.decode().strip().splitlines()[-1])
    return str(answer["version"]), bool(answer["trained"])


if __name__ == "__main__":
    version, trained = ensure_demo_model(Path(sys.argv[1]))
    print(json.dumps({"version": version, "trained": trained}))
