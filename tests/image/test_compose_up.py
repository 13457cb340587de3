"""kompose/docker-compose.yml run for real with Docker's compose (Debian's docker-compose)
on the private engine: the seed's compose world, `cdb_redis` and `cdb_postgres` by name,
brings up a trading stack and the pipeline makes a paper order from mexc_sim's feed.

What the test changes in the file, and only that (on `docker-compose config`'s output):
* images: the project image built offline for `${CDB_IMAGE}`, and the Debian stand-ins
  for `redis:7.2-alpine` / `postgres:15-alpine` (no registry here);
* Prometheus and Grafana are left out (no image of either here; their volumes stay);
* host ports are published on 127.0.0.1 at ports the engine picks, not the fixed ones;
* a `mexc_sim` service (the same image) plays the exchange, and MEXC_WS_URL /
  MEXC_REST_URL point at it through the file's own variables.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT, SIM_CLOCK, eventually
from tests.support.containers import (
    BuiltImage,
    Docker,
    StoreCredentials,
    store_credentials,
    wait_healthy,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

COMPOSE = ROOT / "kompose" / "docker-compose.yml"
PYTHON_SERVICES = {"bot_rest": 8004, "bot_ws": 8000, "signal_engine": 8001,
                   "risk_manager": 8002, "execution_service": 8003, "mexc_sim": 8010}  # fmt: skip


SIM_ARGS = ("--host", "0.0.0.0", "--port", "8010", "--symbols", "6", "--seed", "3",
            "--speed", "60", "--scenario", "pump", "--pump-every-min", "2", "--pump-pct", "9",
            "--history-min", "150")  # fmt: skip


class Compose:
    def __init__(self, docker: Docker, project: str, file: Path) -> None:
        binary = shutil.which("docker-compose")
        assert binary, "docker-compose is missing: run `make setup` (scripts/setup.d/23)"
        self.binary = binary
        self.docker = docker
        self.project = project
        self.file = file

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, "-p", self.project, "-f", str(self.file), *args],
            env=self.docker.env, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        if check and result.returncode:
            raise AssertionError(f"docker-compose {' '.join(args)}:\n{result.stderr[-4000:]}")
        return result

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"


def env_file(directory: Path, creds: StoreCredentials, image: str) -> Path:
    path = directory / ".env"
    path.write_text(
        f"REDIS_PASSWORD={creds.redis_password}\n"
        f"POSTGRES_PASSWORD={creds.postgres_password}\n"
        "GRAFANA_ADMIN_PASSWORD=unused-grafana-is-left-out\n"
        f"CDB_IMAGE={image}\n"
        "MEXC_WS_URL=ws://mexc_sim:8010/edge\n"
        "MEXC_REST_URL=http://mexc_sim:8010\n"
    )
    return path


def as_run_here(config: dict[str, Any], test_images: dict[str, str]) -> dict[str, Any]:
    """The deltas of this module's docstring, applied to the resolved compose file."""
    services = config["services"]
    for left_out in ("prometheus", "grafana"):
        services.pop(left_out)
    services["cdb_redis"]["image"] = test_images["redis"]
    services["cdb_postgres"]["image"] = test_images["postgres"]
    sim = {key: value for key, value in services["bot_rest"].items() if key != "depends_on"}
    sim["command"] = ["python", "-m", "cdb.mexc_sim", *SIM_ARGS]
    sim["environment"] = {**sim["environment"], "HTTP_PORT": "8010"}
    sim["ports"] = ["127.0.0.1::8010"]
    services["mexc_sim"] = sim
    # mexc_sim's clock runs --speed times faster than the wall clock: let bot_ws accept it
    # (as the demo and kind-values.yaml do), or it refuses every frame as a time jump.
    services["bot_ws"]["environment"] = {**services["bot_ws"]["environment"], **SIM_CLOCK}
    for service in services.values():
        if "ports" not in service:
            continue
        # "127.0.0.1:8004:8004/tcp" -> "127.0.0.1::8004": the engine picks the host port.
        service["ports"] = [
            f"127.0.0.1::{str(port).split(':')[-1].split('/')[0]}"
            for port in service.get("ports", [])
        ]
    return config


@pytest.fixture(scope="module")
def compose_stack(
    docker_engine: Docker,
    cdb_image: BuiltImage,
    test_images: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Compose, StoreCredentials]]:
    directory = tmp_path_factory.mktemp("compose")
    creds = store_credentials()
    env = env_file(directory, creds, cdb_image.tag)
    original = Compose(docker_engine, f"cdb{os.getpid()}", COMPOSE)
    resolved = yaml.safe_load(original("--env-file", str(env), "config").stdout)
    file = directory / "docker-compose.yml"
    file.write_text(yaml.safe_dump(as_run_here(resolved, test_images), sort_keys=False))
    compose = Compose(docker_engine, original.project, file)
    try:
        compose("up", "-d", "--no-build")
        yield compose, creds
    finally:
        compose("down", "-v", "--timeout", "20", check=False)


def test_compose_brings_up_the_stack_by_the_seeds_names(
    compose_stack: tuple[Compose, StoreCredentials],
) -> None:
    compose, _ = compose_stack
    running = set(compose("ps", "--services", "--filter", "status=running").stdout.split())
    assert running == {"cdb_redis", "cdb_postgres", *PYTHON_SERVICES}, running
    owner = compose.docker.state(compose.container("volume_owner"))
    assert (owner["Status"], owner["ExitCode"]) == ("exited", 0)  # gave the volumes to 1000
    for service, port in PYTHON_SERVICES.items():
        health = wait_healthy(compose.docker, compose.container(service), port, timeout=180)
        assert health["status"] == "ok"
    user = compose.docker(
        "inspect", "--format", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}",
        compose.container("signal_engine"),
    ).stdout.split()  # fmt: skip
    assert user == ["1000:1000", "true"]


def test_compose_stack_makes_a_paper_order_from_the_simulated_feed(
    compose_stack: tuple[Compose, StoreCredentials],
) -> None:
    compose, creds = compose_stack
    for service, port in PYTHON_SERVICES.items():
        wait_healthy(compose.docker, compose.container(service), port, timeout=180)

    def query(sql: str) -> str:
        return compose(
            "exec", "-T", "-e", f"PGPASSWORD={creds.postgres_password}", "cdb_postgres",
            "psql", "-h", "127.0.0.1", "-U", creds.postgres_user, "-d", creds.postgres_db,
            "-tAc", sql, check=False,
        ).stdout.strip()  # fmt: skip

    eventually(
        lambda: query("SELECT count(*) FROM orders WHERE status = 'filled'") not in ("", "0"),
        "a filled paper order in cdb_postgres",
        timeout=240,
        every=0.5,
    )
    assert query("SELECT DISTINCT mode FROM orders") == "paper"
