"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok (simulated nodes whose pods become Ready), from the binaries
``scripts/setup.d/30-kube.sh`` builds into ``.tools/bin``.

The tests use it through the session fixture in ``tests/conftest.py``; a contributor runs
it with ``make cluster`` (``python -m tests.support.cluster``), which prints the KUBECONFIG to point
kubectl, helm and the operator at and keeps the cluster up until Ctrl-C.

* PKI made locally with openssl: a CA, the API server's serving certificate (SAN
  127.0.0.1 and localhost), the service-account signing key, a front-proxy CA.
* Free loopback ports only; nothing listens beyond 127.0.0.1.
* RBAC and PodSecurity admission on, so the chart's Role and the restricted profile are
  enforced as on any cluster. An admin token (``system:masters``) for the tests.
* The API server's audit log (``requests()``): every get/create/update/patch/delete of the
  resources the operator touches (TradingBots at level Request, with their bodies;
  ConfigMaps, StatefulSets and Events at level Metadata), none dropped
  (``--audit-log-mode=blocking``), so a test counts writes on the server's own record
  instead of a mock's (a line can land just after its response: poll for it).
* Every process is stopped by its PID (SIGTERM, then SIGKILL); each writes its log to the
  work directory, which is kept (pytest keeps its last three temporary roots) so a
  failure can be read afterwards.

What it does not have: a kubelet, so no container runs, no probe is executed and no
volume is mounted; kwok marks the pods of its node Running and Ready. Service and pod IPs
are data only.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.processes import ROOT, free_port

BIN = ROOT / ".tools" / "bin"
STAGES = ROOT / ".tools" / "kwok-stages"
NODE_NAME = "kwok-node-0"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
START_TIMEOUT_S = 60.0

__all__ = ["ADMISSIBLE_POD", "ControlPlane", "binaries_missing", "stop_process"]

WRITES = ("create", "update", "patch", "delete")
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [
        {
            "level": "Request",
            "verbs": ["get", *WRITES],
            "resources": [{"group": "cdb.io", "resources": ["tradingbots", "tradingbots/status"]}],
        },
        {
            "level": "Metadata",
            "verbs": ["get", *WRITES],
            "resources": [
                {"group": "", "resources": ["configmaps", "events"]},
                {"group": "apps", "resources": ["statefulsets"]},
            ],
        },
        {"level": "None"},
    ],
}


def binaries_missing() -> list[str]:
    """The control-plane binaries setup has not built (empty when all are there)."""
    names = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"]
    return [name for name in names if not (BIN / name).exists()]


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL when it has not exited after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# A pod the restricted Pod Security profile admits (for workloads a test makes by hand).
ADMISSIBLE_POD: dict[str, Any] = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{"name": "bot-ws", "image": "registry.local/cdb:test",
                    "securityContext": {"allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]}}}],
}  # fmt: skip


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(directory: Path) -> None:
    """CA, serving cert for 127.0.0.1, service-account keys, front-proxy CA + client."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    run = lambda *a: _openssl(*a, cwd=directory)  # noqa: E731
    for ca, subject in (("ca", "/CN=cdb-test-ca"), ("front-proxy-ca", "/CN=front-proxy-ca")):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key",
            "-out", f"{ca}.crt", "-days", "3650", "-subj", subject)  # fmt: skip
    (directory / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
        "extendedKeyUsage=serverAuth\n"
    )
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subject, ca, ext in (
        ("apiserver", "/CN=kube-apiserver", "ca", "server.ext"),
        ("front-proxy-client", "/CN=front-proxy-client", "front-proxy-ca", "client.ext"),
    ):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", subject)  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "3650", "-extfile", ext)  # fmt: skip
    run("genrsa", "-out", "sa.key", "2048")
    run("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")


@dataclass
class ControlPlane:
    """The processes of one control plane and how to reach it."""

    workdir: Path
    api_port: int = field(default_factory=free_port)
    admin_token: str = field(default_factory=lambda: base64.b32encode(os.urandom(20)).decode())
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    simulated_node: bool = True  # a kwok node; off when a real node joins (tests/support/node.py)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def ca_path(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    def env(self) -> dict[str, str]:
        """The environment for kubectl and helm run against this cluster."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            "HELM_CACHE_HOME": str(self.workdir / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(self.workdir / "helm" / "config"),
            "HELM_DATA_HOME": str(self.workdir / "helm" / "data"),
        }

    # --- start -------------------------------------------------------------------------
    def start(self) -> ControlPlane:
        missing = binaries_missing()
        if missing:
            raise RuntimeError(f"not built: {', '.join(missing)} (run scripts/setup.sh)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        make_pki(self.pki)
        (self.pki / "tokens.csv").write_text(f'{self.admin_token},cdb-admin,1,"system:masters"\n')
        os.chmod(self.pki / "tokens.csv", 0o600)
        self._write_kubeconfig()
        try:
            self._start_etcd()
            self._start_apiserver()
            self._wait_ready()
            self._spawn("kube-controller-manager", self._controller_manager_args())
            self._spawn("kube-scheduler", self._scheduler_args())
            if self.simulated_node:
                self._start_kwok()
                self._wait_node_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [str(BIN / name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            start_new_session=True,
        )

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn(
            "etcd",
            [
                "--name=cdb-test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=cdb-test=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )

    def _start_apiserver(self) -> None:
        pki = self.pki
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",  # as on every real cluster: PodSecurity decides
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,"
                "PodSecurity,DefaultStorageClass,ResourceQuota,StorageObjectInUseProtection",
                f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                f"--audit-policy-file={self._write_audit_policy()}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-mode=blocking",
                "--audit-log-maxsize=0",
                "--v=1",
            ],
        )

    def _write_audit_policy(self) -> Path:
        path = self.workdir / "audit-policy.json"
        path.write_text(json.dumps(AUDIT_POLICY))
        return path

    def _controller_manager_args(self) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--root-ca-file={self.ca_path}",
            f"--service-account-private-key-file={self.pki / 'sa.key'}",
            f"--flex-volume-plugin-dir={self.workdir / 'flexvolume'}",
            "--controllers=*",
            "--v=1",
        ]

    def _scheduler_args(self) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--v=1",
        ]

    def _start_kwok(self) -> None:
        stages = sorted(STAGES.glob("*.yaml"))
        storage_class = STAGES / "storage-class.yaml"
        configs = [f"--config={path}" for path in stages if path != storage_class]
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={self.kubeconfig}",
                *configs,
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{free_port()}",
            ],
        )
        self.kubectl("apply", "-f", str(storage_class))
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {KWOK_ANNOTATION: "fake"},
                "labels": {
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
            "status": {
                "allocatable": {"cpu": "32", "memory": "64Gi", "pods": "250"},
                "capacity": {"cpu": "32", "memory": "64Gi", "pods": "250"},
            },
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(node))

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "cdb-test",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_path)},
                }
            ],
            "users": [{"name": "cdb-admin", "user": {"token": self.admin_token}}],
            "contexts": [
                {"name": "cdb-test", "context": {"cluster": "cdb-test", "user": "cdb-admin"}}
            ],
            "current-context": "cdb-test",
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))
        os.chmod(self.kubeconfig, 0o600)

    # --- waiting ---------------------------------------------------------------------
    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        context = ssl.create_default_context(cafile=str(self.ca_path))
        request = urllib.request.Request(
            f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(request, context=context, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError) as error:
                last = str(error)
            time.sleep(0.2)
        raise RuntimeError(f"kube-apiserver not ready: {last}\n{self.log_tail('kube-apiserver')}")

    def _wait_node_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive()
            out = self.kubectl(
                "get", "node", NODE_NAME, "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                check=False,
            )  # fmt: skip
            if out.strip() == "True":
                return
            time.sleep(0.3)
        raise RuntimeError(f"kwok node not Ready\n{self.log_tail('kwok')}")

    # --- using it ----------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        """Run kubectl against this cluster; its stdout (raises with stderr on failure)."""
        return self.run(["kubectl", *args], input=input, check=check).stdout

    def run(
        self, argv: list[str], input: str | None = None, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            cwd=ROOT,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
        return done

    def get(self, *args: str) -> dict[str, Any]:
        """``kubectl get ... -o json`` parsed."""
        out = self.kubectl("get", *args, "-o", "json")
        result: dict[str, Any] = json.loads(out)
        return result

    def apply_crd(self) -> None:
        """The chart's TradingBot CRD, established and servable."""
        self.kubectl("apply", "-f", str(ROOT / "charts" / "cdb" / "crds" / "tradingbots.yaml"))
        self.kubectl("wait", "--for=condition=Established", "crd/tradingbots.cdb.io",
                     "--timeout=30s")  # fmt: skip
        # Established is not yet servable: until its watch cache is up, the API server
        # answers 429 "storage is (re)initializing" (an operator retries; a test must not race).
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.run(["kubectl", "get", "tb", "-A"], check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("TradingBots not servable")
            time.sleep(0.2)

    def operator_kubeconfig(self, namespace: str, path: Path) -> Path:
        """The chart's operator ServiceAccount, Role and RoleBinding and the screener pods'
        ServiceAccount ``cdb`` applied in ``namespace``, and a kubeconfig at ``path`` with a
        token of the operator's ServiceAccount: what the operator pod logs in with (its
        projected token), for an operator run as a process."""
        rendered = self.run([str(BIN / "helm"), "template", "cdb", str(ROOT / "charts" / "cdb"),
                             "-n", namespace, "--show-only", "templates/operator.yaml",
                             "--show-only", "templates/serviceaccount.yaml"]).stdout  # fmt: skip
        rbac = [
            doc
            for doc in yaml.safe_load_all(rendered)
            if doc
            and doc["kind"] in ("ServiceAccount", "Role", "RoleBinding")
            and doc["metadata"]["name"] == "cdb-operator"
        ]
        if {d["kind"] for d in rbac} != {"ServiceAccount", "Role", "RoleBinding"}:
            raise RuntimeError(f"the chart's operator RBAC is incomplete: {rbac}")
        # and the identity of the pods it makes (the chart's screener pod names it)
        pods = [
            doc
            for doc in yaml.safe_load_all(rendered)
            if doc and doc["kind"] == "ServiceAccount" and doc["metadata"]["name"] == "cdb"
        ]
        if len(pods) != 1:
            raise RuntimeError("the chart's ServiceAccount cdb is not rendered")
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                         "items": rbac + pods}))  # fmt: skip
        token = self.kubectl("create", "token", "cdb-operator", "-n", namespace, "--duration=4h")
        cluster = {"server": self.server, "certificate-authority": str(self.ca_path)}
        context = {"cluster": "c", "user": "cdb-operator", "namespace": namespace}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "cdb-operator", "user": {"token": token.strip()}}],
            "contexts": [{"name": "c", "context": context}],
            "current-context": "c",
        }
        path.write_text(json.dumps(config))
        os.chmod(path, 0o600)
        return path

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def requests(
        self,
        namespace: str,
        resource: str | None = None,
        *,
        writes_only: bool = False,
        user_agent: str | None = None,
    ) -> list[dict[str, Any]]:
        """The API server's audit events (stage ResponseComplete) for ``namespace``, oldest
        first: optionally only one resource (``"tradingbots"``, ``"statefulsets"``, ...),
        only writes, only from clients whose User-Agent starts with ``user_agent``."""
        events = []
        with self.audit_log.open(errors="replace") as lines:
            for line in lines:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the line being written right now
                ref = event.get("objectRef") or {}
                if ref.get("namespace") != namespace or event.get("stage") != "ResponseComplete":
                    continue
                if resource is not None and ref.get("resource") != resource:
                    continue
                if writes_only and event.get("verb") not in WRITES:
                    continue
                if user_agent is not None and not str(event.get("userAgent", "")).startswith(
                    user_agent
                ):
                    continue
                events.append(event)
        return events

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # --- stop --------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the processes newest first (kwok ... etcd), each by its PID: SIGTERM, then
        SIGKILL after 10 s, so the API server never outlives nor loses its etcd early."""
        for name in reversed(list(self.procs)):
            stop_process(self.procs.pop(name), timeout=10)


def main() -> None:
    """``make cluster``: start, print how to use it, stop on Ctrl-C or SIGTERM."""
    workdir = ROOT / ".cdb" / "cluster"
    if workdir.exists():
        subprocess.run(["rm", "-rf", str(workdir)], check=True)
    started = time.monotonic()
    plane = ControlPlane(workdir).start()
    print(
        f"control plane up in {time.monotonic() - started:.1f} s: {plane.server}\n"
        f"  export KUBECONFIG={plane.kubeconfig} PATH={BIN}:$PATH\n"
        "  kubectl get nodes\n"
        "  kubectl apply -f k8s/pv-hostpath.yaml\n"
        "  helm install cdb charts/cdb -n cdb --create-namespace --wait\n"
        "  kubectl -n cdb apply -f examples/01-paper-two-symbols/tradingbot.yaml\n"
        f"logs: {workdir}/*.log   stop: Ctrl-C",
        flush=True,
    )
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping:
            plane._check_alive()
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        plane.stop()
        print("control plane stopped", file=sys.stderr)


if __name__ == "__main__":
    main()
