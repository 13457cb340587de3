"""Real containers for the tests: a private Docker engine, the stand-in base images made
from Debian packages by setup, the project image built from the wheelhouse, and the
chart's hardening for every container.

* The engine is Debian's ``dockerd`` on a private socket and data root (overlay2), no
  iptables: containers reach each other on user-defined bridge networks by name, and the
  tests reach a container through a port published on 127.0.0.1 only.
* ``python`` (for ``python:3.11-slim``), ``redis`` and ``postgres`` are imported from the
  root filesystems that ``scripts/setup.d/26-test-images.sh`` made with debootstrap.
* The project image is built with the legacy builder, ``--network none``: every wheel comes
  from ``wheelhouse/`` (``scripts/setup.d/27-wheelhouse.sh``), so a build that tried to
  reach an index would fail here.
* :func:`store_credentials` is the one place the stores' users and passwords come from.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.polling import eventually
from tests.support.processes import ROOT

IMAGES_DIR = ROOT / ".tools" / "images"
WHEELHOUSE = ROOT / "wheelhouse"
PYTHON_IMAGE = "cdb-test/python:3.11-slim"
REDIS_IMAGE = "cdb-test/redis:7"
POSTGRES_IMAGE = "cdb-test/postgres:15"
CDB_IMAGE = "claire-de-binare:test"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# name -> (tarball under .tools/images, `docker import --change` instructions)
BASE_IMAGES: dict[str, tuple[str, list[str]]] = {
    PYTHON_IMAGE: ("python.tar", [f"ENV PATH={PATH}", "ENV LANG=C.UTF-8", 'CMD ["python3"]']),
    REDIS_IMAGE: ("redis.tar", [f"ENV PATH={PATH}", 'CMD ["redis-server"]']),
    POSTGRES_IMAGE: (
        "postgres.tar",
        [
            f"ENV PATH=/usr/lib/postgresql/15/bin:{PATH}",
            "ENV LANG=C.UTF-8",
            'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]',
            'CMD ["postgres"]',
        ],
    ),
}

# The chart's pod and container security context (charts/cdb/values.yaml) as docker flags:
# UID/GID 1000, read-only root, no capabilities, no privilege gain, tmpfs /tmp and /data.
HARDENING: tuple[str, ...] = (
    "--read-only",
    "--user", "1000:1000",
    "--cap-drop", "ALL",
    "--security-opt", "no-new-privileges",
    "--tmpfs", "/tmp:rw,nosuid,nodev,size=256m,uid=1000,gid=1000,mode=1777",
    "--tmpfs", "/data:rw,nosuid,nodev,size=512m,uid=1000,gid=1000,mode=0750",
)  # fmt: skip


@dataclass(frozen=True)
class StoreCredentials:
    """Who the services are to Redis and PostgreSQL (one set for the whole stack)."""

    redis_password: str
    postgres_user: str
    postgres_password: str
    postgres_db: str

    def service_env(self, redis_host: str, postgres_host: str) -> dict[str, str]:
        return {
            "REDIS_HOST": redis_host,
            "REDIS_PORT": "6379",
            "REDIS_PASSWORD": self.redis_password,
            "POSTGRES_HOST": postgres_host,
            "POSTGRES_PORT": "5432",
            "POSTGRES_DB": self.postgres_db,
            "POSTGRES_USER": self.postgres_user,
            "POSTGRES_PASSWORD": self.postgres_password,
        }


def store_credentials() -> StoreCredentials:
    """The one place the container tests take the stores' credentials from."""
    return StoreCredentials(
        redis_password=secrets.token_hex(16),
        postgres_user="cdb_user",
        postgres_password=secrets.token_hex(16),
        postgres_db="claire_de_binare",
    )


class Docker:
    """The ``docker`` CLI against the private engine."""

    def __init__(self, env: dict[str, str], base: Path) -> None:
        self.env = env
        self.base = base

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 600, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True,
            timeout=timeout, input=input, check=False,
        )  # fmt: skip
        if check and result.returncode:
            raise AssertionError(f"docker {' '.join(args)}: {result.stderr[-3000:]}")
        return result

    def run_hardened(
        self,
        name: str,
        image: str,
        network: str,
        command: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        ports: Sequence[int] = (),
        volumes: Sequence[str] = (),
    ) -> None:
        """Start a detached container with the chart's hardening on ``network``."""
        args = ["run", "-d", "--name", name, "--network", network, *HARDENING]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        for port in ports:
            args += ["-p", f"127.0.0.1::{port}"]
        for volume in volumes:
            args += ["-v", volume]
        self(*args, image, *command)

    def host_port(self, name: str, port: int) -> int:
        mapped = self("port", name, str(port)).stdout.split()[0]
        return int(mapped.rsplit(":", 1)[1])

    def logs(self, name: str) -> str:
        result = self("logs", "--tail", "60", name, check=False)
        return (result.stdout + result.stderr)[-6000:]

    def state(self, name: str) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(
            self("inspect", "--format", "{{json .State}}", name).stdout
        )
        return state

    def inspect_image(self, image: str) -> dict[str, Any]:
        info: dict[str, Any] = json.loads(self("image", "inspect", image).stdout)[0]
        return info


def wait_healthy(
    docker: Docker, name: str, port: int, timeout: float = 120, accept: Sequence[str] = ("ok",)
) -> dict[str, Any]:
    """Poll the container's /health through its published port until its status is in
    ``accept``; fail with the container's log when it exits or never gets there."""
    url = f"http://127.0.0.1:{docker.host_port(name, port)}/health"
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            reply = httpx.get(url, timeout=2.0)
            last = reply.json()
            if last.get("status") in accept:
                return dict(last)
        except (httpx.HTTPError, ValueError) as exc:
            last = repr(exc)
        if not docker.state(name)["Running"]:
            raise AssertionError(f"{name} exited:\n{docker.logs(name)}")
        time.sleep(0.5)
    raise AssertionError(f"{name} not healthy after {timeout}s ({last}):\n{docker.logs(name)}")


def psql(docker: Docker, container: str, creds: StoreCredentials, sql: str) -> str:
    """One query through the PostgreSQL container's own psql (unaligned, tuples only)."""
    return docker(
        "exec", "-e", f"PGPASSWORD={creds.postgres_password}", container,
        "psql", "-h", "127.0.0.1", "-U", creds.postgres_user, "-d", creds.postgres_db,
        "-tAc", sql, check=False,
    ).stdout.strip()  # fmt: skip


def wait_stores(docker: Docker, redis: str, postgres: str, creds: StoreCredentials) -> None:
    """The chart's readiness probes: ``redis-cli ping`` and ``pg_isready``."""

    def ready() -> bool:
        pong = docker(
            "exec", "-e", f"REDISCLI_AUTH={creds.redis_password}", redis,
            "redis-cli", "-h", "127.0.0.1", "ping", check=False,
        ).stdout  # fmt: skip
        pg = docker(
            "exec", postgres, "pg_isready", "-h", "127.0.0.1", "-U", creds.postgres_user,
            "-d", creds.postgres_db, check=False,
        )  # fmt: skip
        return "PONG" in pong and pg.returncode == 0

    eventually(ready, f"{redis} and {postgres} ready", timeout=60, every=0.5)


# --- fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Docker]:
    """dockerd from Debian's docker.io on a private socket and data root; stopped by PID."""
    dockerd = shutil.which("dockerd")
    assert dockerd and shutil.which("docker"), "docker.io is missing: run `make setup`"
    assert os.geteuid() == 0, "the Docker engine needs root (CI runs as root)"
    base = Path("/tmp") / f"cdb-dockerd-{os.getpid()}"
    base.mkdir()
    sock = base / "docker.sock"
    log = (base / "dockerd.log").open("wb")
    proc = subprocess.Popen(
        [dockerd, "-H", f"unix://{sock}", "--data-root", str(base / "data"),
         "--exec-root", str(base / "exec"), "--pidfile", str(base / "dockerd.pid"),
         "--iptables=false", "--ip6tables=false", "--bridge=none",
         "--storage-driver=overlay2"],
        stdout=log, stderr=log,
    )  # fmt: skip
    env = {**os.environ, "DOCKER_HOST": f"unix://{sock}", "DOCKER_BUILDKIT": "0"}
    docker = Docker(env, base)
    try:
        deadline = time.monotonic() + 60
        while docker("version", check=False).returncode:
            assert proc.poll() is None, (base / "dockerd.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "dockerd did not come up"
            time.sleep(0.2)
        yield docker
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
        subprocess.run(["umount", "-R", str(base / "exec")], capture_output=True)
        subprocess.run(["umount", "-R", str(base / "data")], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def test_images(docker_engine: Docker) -> dict[str, str]:
    """The stand-in base images, imported from setup's Debian root filesystems."""
    for image, (tarball, changes) in BASE_IMAGES.items():
        path = IMAGES_DIR / tarball
        assert path.exists(), f"{path} is missing: run `make setup` (scripts/setup.d/26)"
        args = ["import"]
        for change in changes:
            args += ["--change", change]
        docker_engine(*args, str(path), image)
    return {"python": PYTHON_IMAGE, "redis": REDIS_IMAGE, "postgres": POSTGRES_IMAGE}


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    size_bytes: int
    build_seconds: float
    log: str


@pytest.fixture(scope="session")
def cdb_image(docker_engine: Docker, test_images: dict[str, str]) -> BuiltImage:
    """The project's Dockerfile built for real, offline, on the stand-in base."""
    assert (WHEELHOUSE / "requirements.txt").exists(), (
        "wheelhouse/ is empty: run `make setup` (scripts/setup.d/27-wheelhouse.sh)"
    )
    started = time.monotonic()
    build = docker_engine(
        "build", "--network", "none",
        "--build-arg", f"PYTHON_IMAGE={test_images['python'].split(':')[0]}",
        "-t", CDB_IMAGE, str(ROOT), timeout=1200,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    size = int(docker_engine("image", "inspect", "--format", "{{.Size}}", CDB_IMAGE).stdout)
    return BuiltImage(CDB_IMAGE, size, elapsed, build.stdout)
