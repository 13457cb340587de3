"""manifests/ is the chart rendered with its defaults: re-render and compare, byte for byte."""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

import yaml

from tests.support import ROOT


def test_manifests_are_in_sync_with_the_chart(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "render-manifests.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    committed = ROOT / "manifests"
    for relative in ("cdb.yaml", *(f"crds/{p.name}" for p in (tmp_path / "crds").glob("*"))):
        assert (committed / relative).exists(), f"manifests/{relative} missing: run make manifests"
        assert filecmp.cmp(tmp_path / relative, committed / relative, shallow=False), (
            f"manifests/{relative} differs from the chart: run `make manifests`"
        )
    extra = {p.name for p in (committed / "crds").glob("*")} - {
        p.name for p in (tmp_path / "crds").glob("*")
    }
    assert not extra, f"manifests/crds has files the chart does not: {extra}"


def test_manifests_hold_no_secret_and_the_whole_stack() -> None:
    objects = [d for d in yaml.safe_load_all((ROOT / "manifests" / "cdb.yaml").read_text()) if d]
    kinds = {o["kind"] for o in objects}
    assert "Secret" not in kinds
    names = {o["metadata"]["name"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")}
    assert names == {
        "redis", "postgres", "bot-rest", "signal-engine", "risk-manager", "execution-service",
        "cdb-operator", "prometheus", "grafana", "notifier", "alertmanager", "console",
    }  # fmt: skip
    assert {"CronJob", "NetworkPolicy", "TradingBot", "Role"} <= kinds
