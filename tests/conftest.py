"""The shared fixtures: throwaway Redis and PostgreSQL servers started from the real binaries.

* Redis: pytest-redis runs Debian's ``redis-server`` with a password (``--requirepass``).
* PostgreSQL: pytest-postgresql runs ``initdb``/``pg_ctl`` through ``scripts/pg_ctl``,
  which runs them as the ``postgres`` user when the tests run as root (CI does);
  for a normal user it is plain ``pg_ctl``. Each test gets a fresh database.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from pytest_postgresql import factories as pg_factories
from pytest_redis import factories as redis_factories
from redis.asyncio import Redis

from cdb.core.bus import Bus
from cdb.core.config import ServiceSettings
from cdb.core.metrics import Health, ServiceMetrics
from tests.support import REDIS_PASSWORD, ROOT, apply_acl_users, free_port
from tests.support.cluster import ControlPlane, binaries_missing
from tests.support.containers import cdb_image, docker_engine, test_images
from tests.support.notify_receiver import Receiver

__all__ = ["cdb_image", "docker_engine", "test_images"]  # session fixtures: real containers

redis_proc = redis_factories.redis_proc(
    executable=shutil.which("redis-server") or "/usr/bin/redis-server",
    password=REDIS_PASSWORD,
)
redisdb = redis_factories.redisdb("redis_proc")

postgresql_proc = pg_factories.postgresql_proc(
    executable=str(ROOT / "scripts" / "pg_ctl"),
    user="cdb_user",
    dbname="claire_de_binare",
)
postgresql = pg_factories.postgresql("postgresql_proc")


@pytest.fixture
def service_env(redis_proc: Any, redisdb: Any, postgresql: Any) -> dict[str, str]:
    """Environment for a service process pointed at this test's Redis and database.
    Redis logs in as ``default`` (the admin); ``as_user`` gives a service its own user."""
    apply_acl_users(redis_proc.host, redis_proc.port)
    info = postgresql.info
    return {
        "REDIS_HOST": redis_proc.host,
        "REDIS_PORT": str(redis_proc.port),
        "REDIS_PASSWORD": REDIS_PASSWORD,
        "POSTGRES_HOST": info.host if info.host.startswith("/") is False else "127.0.0.1",
        "POSTGRES_PORT": str(info.port),
        "POSTGRES_DB": info.dbname,
        "POSTGRES_USER": info.user,
        "POSTGRES_PASSWORD": "",
        "LOG_LEVEL": "INFO",
    }


@pytest.fixture
def settings(service_env: dict[str, str]) -> ServiceSettings:
    return ServiceSettings(
        redis_host=service_env["REDIS_HOST"],
        redis_port=int(service_env["REDIS_PORT"]),
        redis_password=SecretStr(REDIS_PASSWORD),
        postgres_host=service_env["POSTGRES_HOST"],
        postgres_port=int(service_env["POSTGRES_PORT"]),
        postgres_db=service_env["POSTGRES_DB"],
        postgres_user=service_env["POSTGRES_USER"],
    )


@pytest.fixture
def redis_only_env(redis_proc: Any, redisdb: Any) -> Iterator[dict[str, str]]:
    """For tests that need only the bus."""
    apply_acl_users(redis_proc.host, redis_proc.port)
    yield {
        "REDIS_HOST": redis_proc.host,
        "REDIS_PORT": str(redis_proc.port),
        "REDIS_PASSWORD": REDIS_PASSWORD,
    }


@pytest.fixture
async def bus(redis_proc: Any, redisdb: Any) -> AsyncIterator[Bus]:
    client = Redis(host=redis_proc.host, port=redis_proc.port, password=REDIS_PASSWORD)
    metrics = ServiceMetrics("test", Health(60.0))
    the_bus = Bus(client, metrics=metrics, max_len=100_000)
    yield the_bus
    await the_bus.close()


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[Any]:
    """A Redis of this test alone, AOF on, that a test may stop and start again."""
    from pytest_redis.executor import RedisExecutor

    executor = RedisExecutor(
        executable=shutil.which("redis-server") or "/usr/bin/redis-server",
        databases=4,
        redis_timeout=30,
        loglevel="notice",
        host="127.0.0.1",
        port=free_port(),
        password=REDIS_PASSWORD,
        appendonly="yes",
        datadir=tmp_path,
    )
    executor.start()
    yield executor
    if executor.running():
        executor.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A channel beyond the network boundary (a webhook, a push service) on loopback."""
    with Receiver() as server:
        yield server


def pytest_configure(config: pytest.Config) -> None:
    """A fresh temporary root per session.

    pytest prunes old ``pytest-of-<user>/pytest-N`` directories when a session starts,
    which deletes the PostgreSQL data directory of a session still running beside it.
    """
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        import tempfile

        config.option.basetemp = tempfile.mkdtemp(prefix="cdb-pytest-")
        config._cdb_basetemp = config.option.basetemp  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    basetemp = getattr(config, "_cdb_basetemp", None)
    if basetemp:
        shutil.rmtree(basetemp, ignore_errors=True)


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A real control plane (tests/support/cluster.py) for the whole session; tests isolate by
    namespace. Its logs stay in pytest's temporary directory for a failure to be read."""
    missing = binaries_missing()
    assert not missing, f"control plane not built ({', '.join(missing)}): run `make setup`"
    plane = ControlPlane(tmp_path_factory.mktemp("kube")).start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def kube_namespace(kube: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace under the restricted Pod Security profile, deleted afterwards."""
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40]
    name = f"t-{stem.strip('-')}-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    kube.kubectl(
        "label", "namespace", name,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )  # fmt: skip
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)
