"""The screener pod the chart defines, read from a file (the ConfigMap ``cdb-screener-pod``
the chart renders from the same ``cdb.screenerPod`` define as its own bot-ws StatefulSet,
mounted into the operator's pod). The operator adds only the per-bot fields to it.

A template is a pod template: ``metadata`` (annotations; no labels) and ``spec`` with one
container named ``bot-ws`` that has no ``env`` of its own (the operator's, per bot).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["CONTAINER", "load_pod_template"]

CONTAINER = "bot-ws"


def load_pod_template(path: Path) -> dict[str, Any]:
    """The pod template in ``path``; a ValueError saying what is wrong when it is not one."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ValueError(f"cannot read the screener pod template: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ValueError(f"the screener pod template is not YAML: {error}") from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("spec"), dict):
        raise ValueError("the screener pod template has no spec")
    containers = loaded["spec"].get("containers")
    if not isinstance(containers, list) or [
        c.get("name") for c in containers if isinstance(c, dict)
    ] != [CONTAINER]:
        raise ValueError(f"the screener pod template must have one container, {CONTAINER!r}")
    if "env" in containers[0] or "envFrom" in containers[0]:
        raise ValueError("the screener pod template sets env: the operator sets it per bot")
    if (loaded.get("metadata") or {}).get("labels"):
        raise ValueError("the screener pod template sets labels: the operator sets them per bot")
    return loaded
