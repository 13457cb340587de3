"""The TradingBot CRD on a real kube-apiserver (tests/support/cluster.py): established without
warnings, every example accepted with the server's defaults, and every case of the shared
table (tests/support/crd_cases.py) decided by the server as crd-check decides it offline, with the
message `kubectl` shows the user. tests/operator/test_crd.py stays the fast offline path; this file
proves the two agree.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cluster import ROOT, ControlPlane
from tests.support.crd_cases import CASES, TWO, bot

CRD_PATH = ROOT / "charts" / "cdb" / "crds" / "tradingbots.yaml"
CRD_CHECK = ROOT / ".tools" / "bin" / "crd-check"
EXAMPLES = sorted((ROOT / "examples").glob("*/tradingbot.yaml"))


@pytest.fixture(scope="module")
def crd(kube: ControlPlane) -> dict[str, Any]:
    """The CRD applied as a user applies it; what kubectl printed on stderr is kept."""
    done = kube.run(["kubectl", "apply", "-f", str(CRD_PATH)])
    kube.kubectl("wait", "--for=condition=Established", "crd/tradingbots.cdb.io", "--timeout=30s")
    result = kube.get("crd", "tradingbots.cdb.io")
    result["_apply_stderr"] = done.stderr
    return result


def offline(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """crd-check's verdict on each resource (the offline fast path)."""
    done = subprocess.run(
        [str(CRD_CHECK), "-crd", str(CRD_PATH), "-"],
        input=json.dumps(resources),
        capture_output=True,
        text=True,
        check=True,
    )
    _, *verdicts = (json.loads(line) for line in done.stdout.splitlines())
    return verdicts


def create(
    kube: ControlPlane, namespace: str, resource: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return kube.run(["kubectl", "create", "-n", namespace, "-f", "-"], input=json.dumps(resource),
                    check=False)  # fmt: skip


def test_the_crd_is_established_with_no_warnings(crd: dict[str, Any]) -> None:
    assert "Warning" not in crd["_apply_stderr"], crd["_apply_stderr"]
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert conditions["NamesAccepted"] == "True"
    assert conditions.get("NonStructuralSchema", "False") == "False"
    assert "tb" in crd["status"]["acceptedNames"]["shortNames"]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_every_example_is_accepted_with_the_servers_defaults(
    kube: ControlPlane, crd: dict[str, Any], kube_namespace: str, path: Path
) -> None:
    example = yaml.safe_load(path.read_text())
    done = kube.run(["kubectl", "apply", "-n", kube_namespace, "-f", str(path)])
    assert "Warning" not in done.stderr, done.stderr
    stored = kube.get("tradingbot", example["metadata"]["name"], "-n", kube_namespace)
    (expected,) = offline([example])
    assert stored["spec"] == expected["defaulted"]["spec"]
    assert stored["metadata"]["generation"] == 1


@pytest.mark.parametrize(("case", "spec", "expected", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_the_server_decides_each_case_as_crd_check_does(
    kube: ControlPlane,
    crd: dict[str, Any],
    kube_namespace: str,
    case: str,
    spec: dict[str, Any] | None,
    expected: str,
    fragment: str,
) -> None:
    resource = bot(spec)
    (verdict,) = offline([resource])
    done = create(kube, kube_namespace, resource)
    if expected == "ok":
        assert done.returncode == 0, done.stderr
        stored = kube.get("tradingbot", "t", "-n", kube_namespace)
        assert stored["spec"] == verdict["defaulted"]["spec"]
        return
    assert done.returncode != 0, f"{case}: the server accepted it"
    assert 'The TradingBot "t" is invalid' in done.stderr, done.stderr
    assert fragment in done.stderr, done.stderr
    offline_errors = verdict["schema_errors"] + verdict["cel_errors"]
    assert any(fragment in error for error in offline_errors), offline_errors


def test_an_unknown_field_is_refused_by_kubectl_and_pruned_without_validation(
    kube: ControlPlane, crd: dict[str, Any], kube_namespace: str
) -> None:
    resource = bot({"symbols": TWO, "thresholdPct": 2.0})
    done = create(kube, kube_namespace, resource)
    assert done.returncode != 0
    assert 'unknown field "spec.thresholdPct"' in done.stderr, done.stderr
    kube.run(["kubectl", "create", "-n", kube_namespace, "--validate=false", "-f", "-"],
             input=json.dumps(resource))  # fmt: skip
    stored = kube.get("tradingbot", "t", "-n", kube_namespace)
    assert "thresholdPct" not in stored["spec"]
    assert stored["spec"]["signal"]["thresholdPct"] == 3.0


def test_status_is_a_subresource_with_checked_enums(
    kube: ControlPlane, crd: dict[str, Any], kube_namespace: str
) -> None:
    create(kube, kube_namespace, bot({"symbols": TWO})).check_returncode()
    # A status sent with the object is dropped: only the status subresource writes it.
    kube.kubectl("patch", "tradingbot", "t", "-n", kube_namespace, "--type=merge",
                 "-p", json.dumps({"status": {"chunks": 9}}))  # fmt: skip
    assert "status" not in kube.get("tradingbot", "t", "-n", kube_namespace)
    maybe = {"type": "Ready", "status": "Maybe", "reason": "X", "message": "",
             "lastTransitionTime": "2026-12-07T00:00:00Z"}  # fmt: skip
    bad = {"status": {"conditions": [maybe]}}
    done = kube.run(["kubectl", "patch", "tradingbot", "t", "-n", kube_namespace, "--type=merge",
                     "--subresource=status", "-p", json.dumps(bad)], check=False)  # fmt: skip
    assert done.returncode != 0
    assert 'Unsupported value: "Maybe"' in done.stderr, done.stderr
    good = {"status": {"chunks": 1, "symbols": 2}}
    kube.kubectl("patch", "tradingbot", "t", "-n", kube_namespace, "--type=merge",
                 "--subresource=status", "-p", json.dumps(good))  # fmt: skip
    stored = kube.get("tradingbot", "t", "-n", kube_namespace)
    assert stored["status"]["chunks"] == 1
    assert stored["metadata"]["generation"] == 1  # status writes never bump generation
