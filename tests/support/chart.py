"""The chart for tests: the pinned tools, ``helm template`` for Kubernetes 1.37, and
lookups in what it renders."""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.support.processes import ROOT

CHART = ROOT / "charts" / "cdb"
HELM = ROOT / ".tools" / "bin" / "helm"
CHECKOV = ROOT / ".tools" / "bin" / "checkov"
PSS_CHECK = ROOT / ".tools" / "bin" / "pss-check"
KUBE_VALIDATE = ROOT / ".venv" / "bin" / "kubernetes-validate"
KUBE_VERSION = "1.37"
DASHBOARD = CHART / "files" / "dashboards" / "claire-de-binare.json"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}


def tool(path: Path) -> str:
    assert path.exists(), f"{path} is missing: run `make setup` (scripts/setup.d installs it)"
    return str(path)


def helm_template(*args: str, crds: bool = True) -> subprocess.CompletedProcess[str]:
    """``helm template cdb charts/cdb -n cdb`` for Kubernetes 1.37 with ``args``."""
    command = [tool(HELM), "template", "cdb", str(CHART), "--namespace", "cdb"]
    command += ["--kube-version", KUBE_VERSION, *(["--include-crds"] if crds else []), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def rendered_objects(*args: str, crds: bool = False) -> list[dict[str, Any]]:
    """The objects ``helm_template(*args)`` renders (fails on a render error)."""
    result = helm_template(*args, crds=crds)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def objects(path: Path) -> list[dict[str, Any]]:
    """The objects of a rendered YAML file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_specs(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The pod spec(s) of a workload object (none for other kinds)."""
    kind = obj["kind"]
    if kind == "Pod":
        yield obj["spec"]
    elif kind == "CronJob":
        yield obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    elif kind in WORKLOAD_KINDS:
        yield obj["spec"]["template"]["spec"]


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for obj in objs:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind}/{name} rendered")


def rendered_config_map(name: str, *args: str) -> dict[str, str]:
    """The data of ConfigMap ``name`` as the chart renders it with ``args``."""
    data: dict[str, str] = find(rendered_objects(*args), "ConfigMap", name)["data"]
    return data


def pss_check(*files: Path) -> subprocess.CompletedProcess[str]:
    """The admission controller's own Pod Security checks (k8s.io/pod-security-admission)."""
    return subprocess.run(
        [tool(PSS_CHECK), "-level", "restricted", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard the chart provisions."""
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


SCREENER_POD_CONFIG_MAP = "cdb-screener-pod"


@functools.cache
def screener_pod_template(*args: str) -> Path:
    """The chart's screener pod (ConfigMap cdb-screener-pod, rendered with ``args``) as the
    file the operator reads (SCREENER_POD_TEMPLATE), in a folder anyone may read: a
    container running as UID 1000 mounts it as the chart does."""
    folder = Path(tempfile.mkdtemp(prefix="cdb-screener-pod-"))
    atexit.register(shutil.rmtree, folder, True)
    folder.chmod(0o755)
    path = folder / "pod.yaml"
    path.write_text(rendered_config_map(SCREENER_POD_CONFIG_MAP, *args)["pod.yaml"])
    path.chmod(0o644)
    return path


def operator_test_pod() -> Path:
    """The screener pod of the operator tests: the chart's, image registry.local/cdb:test."""
    return screener_pod_template(
        "--set", "image.repository=registry.local/cdb", "--set", "image.tag=test"
    )
