"""Local Redis and PostgreSQL servers for ``cdb demo`` and ``make bench``.

Started from the same binaries the tests use, in a project-local data directory
(``.cdb/`` by default) that survives restarts. PostgreSQL refuses to run as root, so as
root the cluster is run by the ``postgres`` user through ``runuser``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cdb.core.acl import ACCESS, acl_file

__all__ = ["LocalPostgres", "LocalRedis", "LocalStack", "pg_bin_dir"]


def pg_bin_dir() -> Path:
    found = shutil.which("pg_ctl")
    if found and not found.endswith("scripts/pg_ctl"):
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name)
    if not candidates:
        raise RuntimeError(
            "PostgreSQL server binaries not found: apt-get install postgresql "
            "(macOS: brew install postgresql@15)"
        )
    return candidates[-1]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_port(port: int, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _port_open(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not open port {port} within {timeout:.0f}s")


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read, from its first byte: created with
    mode 0600 (never world-readable between a write and a chmod)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    path.chmod(0o600)  # an older file keeps its mode through O_TRUNC


def _secret(path: Path) -> str:
    """A password generated once per data directory, kept out of the code and the logs."""
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(24)
    write_private(path, value)
    return value


@dataclass
class LocalRedis:
    """Redis with an ACL file: ``default`` (the admin password, for tools) and one user per
    service with its own password (``cdb.core.acl``), no password in any argv."""

    data_dir: Path
    port: int = 16379

    @property
    def password(self) -> str:
        return _secret(self.data_dir / "redis.password")

    def user_password(self, user: str) -> str:
        return _secret(self.data_dir / "users" / f"{user}.password")

    def user_env(self, user: str) -> dict[str, str]:
        """``REDIS_USERNAME``/``REDIS_PASSWORD`` of a service's own ACL user."""
        return {"REDIS_USERNAME": user, "REDIS_PASSWORD": self.user_password(user)}

    def start(self) -> None:
        if _port_open(self.port):
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not found: apt-get install redis-server")
        acl = self.data_dir / "users.acl"
        write_private(
            acl,
            acl_file(self.password, {user: self.user_password(user) for user in ACCESS}),
        )
        config = self.data_dir / "redis.conf"
        write_private(
            config,
            f"port {self.port}\nbind 127.0.0.1\ndir {self.data_dir}\nappendonly yes\n"
            f"aclfile {acl}\ndaemonize yes\n"
            f"pidfile {self.data_dir / 'redis.pid'}\nlogfile {self.data_dir / 'redis.log'}\n",
        )
        subprocess.run([exe, str(config)], check=True)
        _wait_port(self.port, "redis-server")

    def stop(self) -> None:
        pid_file = self.data_dir / "redis.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text().strip()), 15)
            deadline = time.monotonic() + 10
            while _port_open(self.port) and time.monotonic() < deadline:
                time.sleep(0.05)


@dataclass
class LocalPostgres:
    data_dir: Path
    port: int = 15432
    user: str = "cdb_user"
    database: str = "claire_de_binare"

    @property
    def cluster(self) -> Path:
        return self.data_dir / "pgdata"

    def _run(self, *args: str) -> None:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd="/")

    def start(self) -> None:
        if _port_open(self.port):
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        bin_dir = pg_bin_dir()
        if os.geteuid() == 0:
            shutil.chown(self.data_dir, "postgres")
            directory = self.data_dir.resolve()
            for parent in [directory, *directory.parents]:
                parent.chmod(parent.stat().st_mode | 0o001)
        if not (self.cluster / "PG_VERSION").exists():
            self._run(
                str(bin_dir / "initdb"),
                "-D",
                str(self.cluster),
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
            )
        self._run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(self.cluster),
            "-l",
            str(self.data_dir / "postgres.log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1",
            "start",
        )
        exists = subprocess.run(
            [
                str(bin_dir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                "postgres",
                "-tAc",
                f"SELECT 1 FROM pg_database WHERE datname='{self.database}'",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if exists != "1":
            subprocess.run(
                [
                    str(bin_dir / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    self.user,
                    self.database,
                ],
                check=True,
            )

    def stop(self) -> None:
        if (self.cluster / "postmaster.pid").exists():
            self._run(
                str(pg_bin_dir() / "pg_ctl"), "-D", str(self.cluster), "-m", "fast", "-w", "stop"
            )


@dataclass
class LocalStack:
    """Redis + PostgreSQL for local runs; ``env()`` is what every service reads."""

    data_dir: Path
    redis_port: int = 16379
    postgres_port: int = 15432

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.redis = LocalRedis(self.data_dir / "redis", self.redis_port)
        self.postgres = LocalPostgres(self.data_dir / "postgres", self.postgres_port)

    def start(self) -> None:
        self.redis.start()
        self.postgres.start()

    def stop(self) -> None:
        self.redis.stop()
        self.postgres.stop()

    @property
    def admin_token(self) -> str:
        """The credential of state-changing endpoints, in ``admin.token`` (mode 0600)."""
        return _secret(self.data_dir / "admin.token")

    def service_env(self, service: str) -> dict[str, str]:
        """``env()`` for one service: its own Redis user when it has one, never the admin
        password (mexc_sim, which uses no Redis, gets no Redis password at all)."""
        env = self.env()
        if service == "risk_manager":  # the credential of POST /breaker/reset
            env["ADMIN_TOKEN"] = self.admin_token
        if service in ACCESS:
            return {**env, **self.redis.user_env(service)}
        env.pop("REDIS_PASSWORD")
        return env

    def env(self) -> dict[str, str]:
        """Everything a local tool needs, logging in to Redis as the admin (``default``)."""
        return {
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(self.redis_port),
            "REDIS_PASSWORD": self.redis.password,
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(self.postgres_port),
            "POSTGRES_DB": self.postgres.database,
            "POSTGRES_USER": self.postgres.user,
            "POSTGRES_PASSWORD": "",
        }
