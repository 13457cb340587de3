"""A real Kubernetes node beside the control plane of tests/support/cluster.py: containerd 2.x with
runc and the CNI plugins, the kubelet, kube-proxy and CoreDNS, so pods run as real
containers (their probes executed, their volumes mounted, their Services resolved).

Built by ``scripts/setup.d/31-node.sh`` (containerd from the Go module proxy, kubelet and
kube-proxy in the control plane's multi-call binary, CoreDNS with only the plugins used
here; runc and the CNI plugins from Debian). Configured for this kind of machine:

* cgroup v1 only, PID 1 is not systemd: ``failCgroupV1: false``, ``cgroupDriver:
  cgroupfs``; no swap check.
* No process may lower its OOM score: containerd's ``restrict_oom_score_adj = true``.
* The kubelet sets kernel sysctls on start (``kernel.panic=10``,
  ``kernel.panic_on_oops=1``, ``vm.overcommit_memory=1``); kube-proxy adds iptables
  chains (``KUBE-*``, removed again by ``kube-proxy --cleanup`` on stop).
* Pods get addresses on the bridge ``cdb0`` (10.88.0.0/16, made by the node). The API
  server listens on loopback only, so pods reach it through a forwarder on the bridge's
  gateway address (10.88.0.1:6443), which the ``kubernetes`` Service's EndpointSlice
  names; CoreDNS runs beside the kubelet on 10.88.0.1:53 and is the pods' cluster DNS.
  Nothing listens beyond loopback and that bridge; no traffic leaves the machine.
* The kubelet's node address would be loopback, which the kubelet refuses to report: so
  ``kubectl logs``/``exec`` (API server → kubelet) are not available; the tests read a
  container's log from the kubelet's log directory and run commands through ``ctr``.

Images come in through ``ctr images import`` (no registry is reached): a pause image
built from a 20-line C program here, the project image from ``docker save``, Redis and
PostgreSQL images from the Debian root filesystems ``scripts/setup.d/26-test-images.sh``
made.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.cluster import BIN, ControlPlane, stop_process
from tests.support.processes import free_port

BRIDGE, GATEWAY, POD_CIDR, SERVICE_CIDR = "cdb0", "10.88.0.1", "10.88.0.0/16", "10.96.0.0/16"
FENCE = [  # iptables rules (chain + match): pods talk to pods and to the node, no further
    [
        "FORWARD",
        "-s",
        POD_CIDR,
        "!",
        "-d",
        POD_CIDR,
        "-m",
        "comment",
        "--comment",
        "cdb test node: pods stay on this machine",
        "-j",
        "REJECT",
    ],
]
API_FORWARD_PORT = 6443
NODE_NAME = "cdb-node-0"
PAUSE_IMAGE = "cdb.local/pause:3.10"
START_TIMEOUT_S = 60.0
NODE_BINARIES = [
    "kubelet",
    "kube-proxy",
    "coredns",
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "pause",
]

__all__ = ["Node", "node_missing", "oci_archive"]


def node_missing() -> list[str]:
    """What the node needs and this machine lacks (empty when it can start)."""
    missing = [name for name in NODE_BINARIES if not (BIN / name).exists()]
    missing += [tool for tool in ("runc", "iptables", "ip") if shutil.which(tool) is None]
    if not Path("/usr/lib/cni/bridge").exists():
        missing.append("containernetworking-plugins")
    if os.geteuid() != 0:
        missing.append("root")
    return missing


def oci_archive(out: Path, ref: str, layer: bytes | Path, config: dict[str, Any]) -> Path:
    """An OCI image archive for ``ctr images import``: one layer (a tar, as bytes or a
    file, stored uncompressed) and an image config (Env, Entrypoint, Cmd, User…)."""
    if isinstance(layer, Path):
        digest = hashlib.sha256()
        with layer.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        layer_digest, layer_size = f"sha256:{digest.hexdigest()}", layer.stat().st_size
    else:
        layer_digest, layer_size = f"sha256:{hashlib.sha256(layer).hexdigest()}", len(layer)
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }
    config_bytes = json.dumps(image_config).encode()
    config_digest = f"sha256:{hashlib.sha256(config_bytes).hexdigest()}"
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest,
                "size": layer_size,
            }
        ],
    }
    manifest_bytes = json.dumps(manifest).encode()
    manifest_digest = f"sha256:{hashlib.sha256(manifest_bytes).hexdigest()}"
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "annotations": {
                    "org.opencontainers.image.ref.name": ref,
                    "io.containerd.image.name": ref,
                },
            }
        ],
    }
    with tarfile.open(out, "w") as archive:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add("index.json", json.dumps(index).encode())
        add(f"blobs/sha256/{config_digest[7:]}", config_bytes)
        add(f"blobs/sha256/{manifest_digest[7:]}", manifest_bytes)
        if isinstance(layer, Path):
            archive.add(layer, arcname=f"blobs/sha256/{layer_digest[7:]}")
        else:
            add(f"blobs/sha256/{layer_digest[7:]}", layer)
    return out


def single_file_layer(path: Path, name: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tar.gettarinfo(str(path), arcname=name)
        info.uid = info.gid = 0
        info.mtime = 0
        with path.open("rb") as handle:
            tar.addfile(info, handle)
    return raw.getvalue()


class Forwarder:
    """A TCP forwarder (asyncio streams, in a thread): the bridge's gateway address to the
    API server's loopback port, for pods (the TLS stays end to end)."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.listen, self.target = listen, target
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None

    def start(self) -> None:
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(self._serve(), self.loop)
        future.result(timeout=10)

    async def _serve(self) -> None:
        self.server = await asyncio.start_server(self._handle, *self.listen)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def stop(self) -> None:
        async def close() -> None:
            if self.server is not None:
                self.server.close()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@dataclass
class Node:
    """containerd, kubelet, kube-proxy and CoreDNS for one node of ``plane``."""

    plane: ControlPlane
    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    forwarder: Forwarder | None = None

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    def ctr(self, *args: str, input: bytes | None = None, check: bool = True) -> str:
        done = subprocess.run(
            [str(BIN / "ctr"), "--address", str(self.socket), "-n", "k8s.io", *args],
            input=input,
            capture_output=True,
            timeout=300,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {done.stderr.decode()[-2000:]}")
        return done.stdout.decode()

    # --- start -------------------------------------------------------------------------
    def start(self) -> Node:
        missing = node_missing()
        if missing:
            raise RuntimeError(f"the node cannot start here, missing: {', '.join(missing)}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._bridge()
            self._containerd()
            self.import_archive(
                oci_archive(
                    self.workdir / "pause.tar",
                    PAUSE_IMAGE,
                    single_file_layer(BIN / "pause", "pause"),
                    {"Entrypoint": ["/pause"], "User": "65535:65535"},
                )
            )
            self._api_for_pods()
            self._coredns()
            self._kubelet()
            self._kube_proxy()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
        self.procs[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            env=env,
            start_new_session=True,
        )

    def _bridge(self) -> None:
        """The pods' bridge with the gateway address, made before anything binds to it, and
        the fences that keep every pod packet on this machine: a Service address without a
        rule yet is unreachable (not routed to the default gateway), and nothing from a pod
        is forwarded anywhere but to another pod."""
        if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode:
            subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
            subprocess.run(["ip", "addr", "add", f"{GATEWAY}/16", "dev", BRIDGE], check=True)
        subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
        subprocess.run(["ip", "route", "replace", "unreachable", SERVICE_CIDR], check=True)
        for rule in FENCE:
            if subprocess.run(["iptables", "-C", *rule], capture_output=True).returncode:
                subprocess.run(["iptables", "-I", *rule], check=True)

    def _containerd(self) -> None:
        base = self.workdir / "containerd"
        cni = self.workdir / "cni"
        base.mkdir(exist_ok=True)
        cni.mkdir(exist_ok=True)
        (cni / "10-cdb.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "cdb",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": BRIDGE,
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                        {"type": "loopback"},
                    ],
                }
            )
        )
        cri = 'plugins."io.containerd.cri.v1.runtime"'
        (base / "config.toml").write_text(f"""version = 3
root = "{base / "root"}"
state = "{base / "state"}"
[grpc]
  address = "{self.socket}"
[{cri}]
  enable_selinux = false
  restrict_oom_score_adj = true
  [{cri}.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{cni}"
  [{cri}.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [{cri}.containerd.runtimes.runc.options]
      SystemdCgroup = false
      BinaryName = "{shutil.which("runc")}"
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "{PAUSE_IMAGE}"
""")
        self._spawn("containerd", [str(BIN / "containerd"), "--config", str(base / "config.toml")])
        self._until(
            lambda: self.socket.exists() and self.ctr("version", check=False) != "", "containerd"
        )

    def _api_for_pods(self) -> None:
        """Pods reach the API server at the ``kubernetes`` Service (10.96.0.1:443), which
        kube-proxy sends to the forwarder on the gateway address."""
        self.forwarder = Forwarder((GATEWAY, API_FORWARD_PORT), ("127.0.0.1", self.plane.api_port))
        self.forwarder.start()
        slice_ = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes-node",
                "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": "kubernetes",
                    "endpointslice.kubernetes.io/managed-by": "cdb-test",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [GATEWAY], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": API_FORWARD_PORT, "protocol": "TCP"}],
        }
        self.plane.kubectl("apply", "-f", "-", input=json.dumps(slice_))

    def _coredns(self) -> None:
        corefile = self.workdir / "Corefile"
        corefile.write_text(f""".:53 {{
    bind {GATEWAY}
    errors
    health 127.0.0.1:{free_port()}
    ready 127.0.0.1:{free_port()}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {self.plane.kubeconfig} cdb-test
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
""")
        self._spawn("coredns", [str(BIN / "coredns"), "-conf", str(corefile)])

    def _kubelet(self) -> None:
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "clusterDomain": "cluster.local",
            "clusterDNS": [GATEWAY],
            "resolvConf": "/etc/resolv.conf",
            "makeIPTablesUtilChains": False,
            "protectKernelDefaults": False,
            "enforceNodeAllocatable": [],
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "serializeImagePulls": False,
            "localStorageCapacityIsolation": False,
            "podLogsDir": str(self.workdir / "pod-logs"),
        }
        path = self.workdir / "kubelet.json"
        path.write_text(json.dumps(config))
        self._spawn(
            "kubelet",
            [
                str(BIN / "kubelet"),
                f"--config={path}",
                f"--kubeconfig={self.plane.kubeconfig}",
                f"--hostname-override={NODE_NAME}",
                "--node-ip=127.0.0.1",
                f"--root-dir={self.workdir / 'kubelet'}",
                f"--cert-dir={self.workdir / 'pki'}",
                "--v=1",
            ],
        )

    def _kube_proxy(self) -> None:
        self._spawn(
            "kube-proxy",
            [
                str(BIN / "kube-proxy"),
                f"--kubeconfig={self.plane.kubeconfig}",
                f"--hostname-override={NODE_NAME}",
                f"--cluster-cidr={POD_CIDR}",
                "--proxy-mode=iptables",
                "--masquerade-all",
                f"--metrics-bind-address=127.0.0.1:{free_port()}",
                f"--healthz-bind-address=127.0.0.1:{free_port()}",
                "--conntrack-max-per-core=0",
                "--v=1",
            ],
        )

    def _wait_ready(self) -> None:
        def ready() -> bool:
            out = self.plane.kubectl(
                "get",
                "node",
                NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                check=False,
            )
            return out.strip() == "True"

        self._until(ready, "the kubelet's node Ready")

    def _until(self, check: Any, what: str, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited {proc.returncode}:\n{self.log_tail(name)}")
            if check():
                return
            time.sleep(0.3)
        raise RuntimeError(f"timed out waiting for {what}")

    # --- using it ----------------------------------------------------------------------
    def import_archive(self, archive: Path) -> None:
        self.ctr("images", "import", "--no-unpack=false", str(archive))

    def import_rootfs(self, ref: str, rootfs: Path, config: dict[str, Any]) -> None:
        self.import_archive(oci_archive(self.workdir / "image.tar", ref, rootfs, config))
        (self.workdir / "image.tar").unlink()

    def container_log(self, namespace: str, pod: str, container: str) -> str:
        """A container's log as the kubelet wrote it (``kubectl logs`` needs a reachable
        node address, which this node does not have)."""
        logs = sorted((self.workdir / "pod-logs").glob(f"{namespace}_{pod}_*/{container}/*.log"))
        return "\n".join(path.read_text(errors="replace") for path in logs)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # --- stop --------------------------------------------------------------------------
    def stop(self) -> None:
        """Remove every pod's containers, then stop the node's processes by PID, undo
        kube-proxy's iptables chains and remove the bridge."""
        kubelet = self.procs.get("kubelet")
        if kubelet is not None and kubelet.poll() is None:
            self.plane.kubectl(
                "delete",
                "pods",
                "--all",
                "-A",
                "--force",
                "--grace-period=0",
                "--wait=false",
                check=False,
            )
        for name in ("kube-proxy", "kubelet", "coredns"):
            self._stop(name)
        if self.socket.exists() and "containerd" in self.procs:
            for line in self.ctr("tasks", "ls", "-q", check=False).split():
                self.ctr("tasks", "kill", "-s", "SIGKILL", line, check=False)
            sandboxes = self.ctr("containers", "ls", "-q", check=False).split()
            for container in sandboxes:
                self.ctr("tasks", "delete", "-f", container, check=False)
                self.ctr("containers", "delete", container, check=False)
        self._stop("containerd")
        subprocess.run(
            ["pkill", "-9", "-f", f"containerd-shim-runc-v2.*{self.socket}"], check=False
        )
        if self.forwarder is not None:
            self.forwarder.stop()
            self.forwarder = None
        if (BIN / "kube-proxy").exists():
            subprocess.run([str(BIN / "kube-proxy"), "--cleanup"], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)
        subprocess.run(
            ["ip", "route", "del", "unreachable", SERVICE_CIDR], capture_output=True, check=False
        )
        for rule in FENCE:
            subprocess.run(["iptables", "-D", *rule], capture_output=True, check=False)
        mounts = [
            line.split()[1]
            for line in Path("/proc/mounts").read_text().splitlines()
            if str(self.workdir) in line.split()[1]
        ]
        for mount in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)

    def _stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            stop_process(proc, timeout=15)
