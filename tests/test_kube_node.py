"""A real node (tests/node.py: containerd, runc, CNI bridge, kubelet, kube-proxy, CoreDNS)
joined to a control plane of its own (tests/cluster.py), so nothing else of the suite is
scheduled onto it: pods run as real containers under the restricted Pod Security profile,
their probes are executed by the kubelet, Services are resolved by CoreDNS and routed by
kube-proxy; then the chart itself runs on it and trades on paper.

What this changes on the machine while it runs (and undoes on stop): a bridge ``cdb0``
(10.88.0.0/16), kube-proxy's ``KUBE-*`` iptables chains, and the kubelet's kernel
settings (``kernel.panic``, ``kernel.panic_on_oops``, ``vm.overcommit_memory``), which
stay as the kubelet set them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster import ROOT, ControlPlane
from tests.node import NODE_NAME, Node
from tests.support import eventually

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
