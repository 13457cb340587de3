"""A real node (tests/support/node.py: containerd, runc, CNI bridge, kubelet, kube-proxy, CoreDNS)
joined to a control plane of its own (tests/support/cluster.py), so nothing else of the suite is
scheduled onto it: pods run as real containers under the restricted Pod Security profile,
their probes are executed by the kubelet, Services are resolved by CoreDNS and routed by
kube-proxy; then the chart itself runs on it and trades on paper.

What this changes on the machine while it runs (and undoes on stop): a bridge ``cdb0``
(10.88.0.0/16), kube-proxy's ``KUBE-*`` iptables chains, and the kubelet's kernel
settings (``kernel.panic``, ``kernel.panic_on_oops``, ``vm.overcommit_memory``), which
stay as the kubelet set them.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.support import eventually
from tests.support.cluster import ROOT, ControlPlane
from tests.support.containers import BuiltImage, Docker
from tests.support.node import NODE_NAME, Node

PYTHON_IMAGE = "cdb.local/python:3.11"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HARDENED_POD = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
HARDENED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, Node]]:
    workdir = tmp_path_factory.mktemp("node")
    plane = ControlPlane(workdir / "plane", simulated_node=False).start()
    node = None
    try:
        node = Node(plane, workdir / "node").start()
        node.import_rootfs(
            PYTHON_IMAGE,
            ROOT / ".tools" / "images" / "python.tar",
            {"Env": [f"PATH={PATH}", "LANG=C.UTF-8"], "Cmd": ["python3"]},
        )
        yield plane, node
    finally:
        if node is not None:
            node.stop()
        plane.stop()


def namespace(plane: ControlPlane, name: str) -> str:
    plane.kubectl("create", "namespace", name)
    plane.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    return name


def apply(plane: ControlPlane, *objects: dict[str, Any]) -> None:
    plane.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}),
    )


def python_pod(name: str, ns: str, code: str, **extra: Any) -> dict[str, Any]:
    container = {
        "name": name,
        "image": PYTHON_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["python3", "-c", code],
        "securityContext": HARDENED_CONTAINER,
        **extra,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "securityContext": HARDENED_POD,
            "containers": [container],
            "restartPolicy": "Never",
        },
    }


def phase(plane: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    return plane.get("pod", name, "-n", ns)


def test_a_restricted_pod_is_a_real_container_and_reaches_a_service_by_name(
    cluster: tuple[ControlPlane, Node],
) -> None:
    plane, node = cluster
    ns = namespace(plane, "node-basics")
    server = python_pod(
        "web",
        ns,
        "import http.server, os\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        '        body = f\'{os.getuid()} {open("/proc/1/cgroup").read().count("kubepods")}\'\n'
        "        self.send_response(200); self.end_headers(); self.wfile.write(body.encode())\n"
        "http.server.HTTPServer(('', 8080), H).serve_forever()\n",
        ports=[{"containerPort": 8080, "name": "http"}],
        readinessProbe={"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
    )
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    apply(plane, server, service)
    plane.kubectl("wait", "-n", ns, "--for=condition=Ready", "pod/web", "--timeout=120s")
    web = phase(plane, ns, "web")
    assert web["spec"]["nodeName"] == NODE_NAME
    assert web["status"]["podIP"].startswith("10.88.")

    client = python_pod(
        "client",
        ns,
        "import time, urllib.request\n"
        "for attempt in range(60):  # until kube-proxy has the new Service's rule\n"
        "    try:\n"
        f"        body = urllib.request.urlopen('http://web.{ns}.svc.cluster.local/', timeout=2)\n"
        "        break\n"
        "    except OSError as error:\n"
        "        print('not yet:', error, flush=True); time.sleep(1)\n"
        "print(body.read().decode(), flush=True)\n",
    )
    apply(plane, client)
    done = eventually(
        lambda: (
            phase(plane, ns, "client")["status"].get("phase") in ("Succeeded", "Failed")
            and phase(plane, ns, "client")
        ),
        "the client pod to finish",
        timeout=120,
    )
    log = node.container_log(ns, "client", "client")
    assert done["status"]["phase"] == "Succeeded", log
    # The server ran as UID 1000, inside the kubelet's pod cgroups, and its answer came back
    # through the Service's name (CoreDNS) and ClusterIP (kube-proxy).
    assert "1000 " in log, log
    plane.kubectl("delete", "namespace", ns, "--wait=false")


def test_a_root_container_is_refused_by_the_restricted_profile(
    cluster: tuple[ControlPlane, Node],
) -> None:
    plane, _ = cluster
    ns = namespace(plane, "node-refused")
    root = python_pod("root", ns, "print('never')")
    root["spec"]["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}}
    root["spec"]["containers"][0]["securityContext"] = {"runAsUser": 0}
    done = plane.run(["kubectl", "apply", "-f", "-"], input=json.dumps(root), check=False)
    assert done.returncode != 0 and "violates PodSecurity" in done.stderr, done.stderr
    assert plane.get("pods", "-n", ns)["items"] == []


def hostpath_volumes(plane: ControlPlane, ns: str, root: Path) -> None:
    """k8s/pv-hostpath.yaml with its paths under ``root`` (made and given to UID 1000, as
    k8s/hostpath-permissions-job.yaml does on Docker Desktop) and its claims in ``ns``."""
    docs = [d for d in yaml.safe_load_all((ROOT / "k8s" / "pv-hostpath.yaml").read_text()) if d]
    for pv in docs:
        path = root / pv["metadata"]["name"]
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, 1000, 1000)
        pv["spec"]["hostPath"] = {"path": str(path), "type": "Directory"}
        pv["spec"]["claimRef"]["namespace"] = ns
    apply(plane, *docs)


def paper_orders(plane: ControlPlane, ns: str) -> int:
    """Filled paper orders in the release's PostgreSQL, asked at its pod's address."""
    pod = plane.get("pods", "-n", ns, "-l", "app.kubernetes.io/name=postgres")["items"][0]
    secret = plane.get("secret", "cdb-postgres", "-n", ns)["data"]["postgres-password"]
    with psycopg.connect(
        host=pod["status"]["podIP"],
        port=5432,
        user="cdb_user",
        dbname="claire_de_binare",
        password=base64.b64decode(secret).decode(),
        connect_timeout=5,
    ) as conn:
        row = conn.execute(
            "SELECT count(*) FROM orders WHERE mode = 'paper' AND status = 'filled'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_the_chart_runs_as_real_pods_and_trades_on_paper(
    cluster: tuple[ControlPlane, Node],
    docker_engine: Docker,
    cdb_image: BuiltImage,
    test_images: dict[str, str],
    tmp_path: Path,
) -> None:
    """What `make kind-e2e` does on a user's CI, offline: the chart's pods from the project
    image and the Debian-built Redis and PostgreSQL, the operator reconciling the default
    TradingBot, mexc_sim's pump becoming a paper order in PostgreSQL. Prometheus, Grafana
    and Alertmanager are off: no registry here has their images."""
    plane, node = cluster
    for image in (cdb_image.tag, test_images["redis"], test_images["postgres"]):
        archive = tmp_path / "image.tar"
        docker_engine("save", "-o", str(archive), image)
        node.import_archive(archive)
        archive.unlink()
    ns = namespace(plane, "cdb")
    hostpath_volumes(plane, ns, tmp_path / "volumes")
    repository, tag = cdb_image.tag.split(":")
    redis_repo, redis_tag = test_images["redis"].split(":")
    pg_repo, pg_tag = test_images["postgres"].split(":")
    values = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "redis": {"image": {"repository": redis_repo, "tag": redis_tag}},
        "postgres": {"image": {"repository": pg_repo, "tag": pg_tag}},
        "prometheus": {"enabled": False},
        "grafana": {"enabled": False},
        "alertmanager": {"enabled": False},
    }
    (tmp_path / "values.yaml").write_text(json.dumps(values))
    kind = ROOT / "charts" / "cdb" / "ci" / "kind-values.yaml"
    done = plane.run(
        [
            str(ROOT / ".tools" / "bin" / "helm"),
            "install",
            "cdb",
            str(ROOT / "charts" / "cdb"),
            "-n",
            ns,
            "-f",
            str(kind),
            "-f",
            str(tmp_path / "values.yaml"),
            "--set",
            "storage.mode=hostPath",
            "--wait",
            "--timeout",
            "600s",
        ],
        check=False,
        timeout=700,
    )
    pods = plane.get("pods", "-n", ns)["items"]
    states = {p["metadata"]["name"]: p["status"].get("containerStatuses") for p in pods}
    assert done.returncode == 0, f"{done.stderr}\n{json.dumps(states, indent=1)[-4000:]}"
    for pod in pods:
        assert pod["spec"]["nodeName"] == NODE_NAME
        for status in pod["status"].get("containerStatuses") or []:
            assert status["ready"] or pod["status"]["phase"] == "Succeeded", status
    plane.kubectl("wait", "-n", ns, "--for=condition=Ready", "tb/mexc-momentum", "--timeout=300s")
    orders = eventually(lambda: paper_orders(plane, ns), "a paper order", timeout=420, every=5)
    assert orders >= 1
