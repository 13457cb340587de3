"""The operator on a real control plane (tests/support/cluster.py: etcd, kube-apiserver,
controller-manager, scheduler, a kwok node): how long from start, ``kubectl apply`` and
``kubectl edit`` to the effect.

``python -m cdb_operator`` runs as a process, logged in with a token of the chart's
ServiceAccount bound to the chart's Role, with the bench's local Redis and PostgreSQL.
The bench drives the API with one HTTP client (no kubectl start-up in the figures):

* start → first reconcile: the operator started over an existing bot until the bot's
  status carries the config hash, after a cold and after warm starts;
* create → Ready: a new 450-symbol bot until its Ready condition is True: ConfigMap and
  StatefulSet written, the StatefulSet controller makes 3 pods, kwok marks them Ready,
  readyReplicas reaches the bot's status;
* threshold edit → control event: a spec edit until the ``control`` entry is on Redis.

Each figure is repeated and reported as min and median with the load average.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from redis import Redis
from tests.support import ServiceProcess, free_port
from tests.support.chart import screener_pod_template
from tests.support.cluster import ROOT, ControlPlane

from cdb.core.events import Control, Stream
from cdb.localstack import LocalStack

ROUNDS = 7
STARTS = 4
NAMESPACE = "bench"
BOTS = f"/apis/cdb.io/v1alpha1/namespaces/{NAMESPACE}/tradingbots"
MERGE = {"Content-Type": "application/merge-patch+json"}


def until(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.005)
    raise TimeoutError("the operator did not get there in time")


def figure(name: str, samples: list[float], note: str) -> dict[str, Any]:
    ms = [s * 1000 for s in samples]
    return {
        "name": name,
        "value": statistics.median(ms),
        "unit": "ms",
        "note": f"median of {len(ms)}, min {min(ms):.0f} ms; {note}; "
        f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
    }


class Bench:
    def __init__(self, plane: ControlPlane, stack: LocalStack, work: Path) -> None:
        self.plane, self.stack, self.work = plane, stack, work
        self.api = httpx.Client(
            base_url=plane.server,
            headers={"Authorization": f"Bearer {plane.admin_token}"},
            verify=str(plane.ca_path),
            timeout=10,
        )
        self.redis = Redis(host="127.0.0.1", port=stack.redis_port, password=stack.redis.password)

    def prepare(self) -> Path:
        """The CRD, the namespace, the chart's operator RBAC and a kubeconfig with its token."""
        plane = self.plane
        plane.kubectl("apply", "-f", str(ROOT / "charts" / "cdb" / "crds" / "tradingbots.yaml"))
        plane.kubectl("wait", "--for=condition=Established", "crd/tradingbots.cdb.io")
        until(lambda: self.api.get(BOTS).status_code == 200)
        plane.kubectl("create", "namespace", NAMESPACE)
        return plane.operator_kubeconfig(NAMESPACE, self.work / "operator-kubeconfig")

    def operator(self, kubeconfig: Path) -> ServiceProcess:
        env = {
            **self.stack.env(),
            "KUBECONFIG": str(kubeconfig),
            "OPERATOR_NAMESPACE": NAMESPACE,
            "SCREENER_POD_TEMPLATE": str(
                screener_pod_template("--set", "image.repository=registry.local/cdb")
            ),
            "BOT_REST_URL": "http://127.0.0.1:9/unused",
            "RETRY_DELAY_S": "0.5",
            "UNIVERSE_REFRESH_S": "3600",
            "LOG_LEVEL": "WARNING",
        }
        return ServiceProcess("cdb_operator", env, self.work, port=free_port())

    def bot(self, name: str) -> dict[str, Any]:
        reply = self.api.get(f"{BOTS}/{name}")
        return dict(reply.json()) if reply.status_code == 200 else {}

    def ready(self, name: str) -> bool:
        status = self.bot(name).get("status") or {}
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )

    def controls(self, name: str) -> int:
        entries = self.redis.xrange(Stream.CONTROL.value)
        return sum(1 for _, f in entries if Control.model_validate_json(f[b"event"]).bot == name)

    def create(self, name: str) -> None:
        body = {"apiVersion": "cdb.io/v1alpha1", "kind": "TradingBot",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"symbols": [f"C{n:04d}_USDT" for n in range(450)]}}  # fmt: skip
        self.api.post(BOTS, json=body).raise_for_status()

    def delete(self, name: str) -> None:
        self.api.delete(f"{BOTS}/{name}")
        until(lambda: self.api.get(f"{BOTS}/{name}").status_code == 404)

    def run(self) -> list[dict[str, Any]]:
        kubeconfig = self.prepare()
        starts: list[float] = []
        self.create("resident")
        for _ in range(STARTS):  # the first start is cold (imports, migrations)
            process = self.operator(kubeconfig)
            self.api.patch(f"{BOTS}/resident/status", json={"status": None}, headers=MERGE)
            started = time.perf_counter()
            with process:
                until(lambda: "configHash" in (self.bot("resident").get("status") or {}))
                starts.append(time.perf_counter() - started)
        created: list[float] = []
        edited: list[float] = []
        with self.operator(kubeconfig) as process:
            process.wait_healthy(60)
            self.delete("resident")
            for i in range(ROUNDS):
                name = f"bench-{i}"
                started = time.perf_counter()
                self.create(name)
                until(lambda name=name: self.ready(name))
                created.append(time.perf_counter() - started)
                before = self.controls(name)
                started = time.perf_counter()
                patch = {"spec": {"signal": {"thresholdPct": 4.5}}}
                self.api.patch(f"{BOTS}/{name}", json=patch, headers=MERGE).raise_for_status()
                until(lambda name=name, before=before: self.controls(name) > before)
                edited.append(time.perf_counter() - started)
                self.delete(name)  # one bot drives a namespace's pipeline at a time
        return [
            figure("operator start → first reconcile (cold)", starts[:1], "first start"),
            figure("operator start → first reconcile (warm)", starts[1:], "restarts"),
            figure("create → Ready (450 symbols, 3 pods)", created, "kwok node"),
            figure("threshold edit → control event", edited, "real API server"),
        ]


def run(stack: LocalStack) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="cdb-bench-kube-") as tmp:
        plane = ControlPlane(Path(tmp)).start()
        try:
            return Bench(plane, stack, Path(tmp)).run()
        finally:
            plane.stop()


if __name__ == "__main__":
    sys.exit("run through `make bench BENCH_ARGS=bench_operator`")
