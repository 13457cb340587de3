"""Local Redis and PostgreSQL servers for ``cdb demo`` and ``make bench``.

Started from the same binaries the tests use, in a project-local data directory
(``.cdb/`` by default) that survives restarts. PostgreSQL refuses to run as root, so as
root the cluster is run by the ``postgres`` user through ``runuser``. Both require a
password of every client; passwords live in private files of the data directory.
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

__all__ = ["ADMIN_SERVICES", "LocalPostgres", "LocalRedis", "LocalStack", "pg_bin_dir"]

# The services with state-changing HTTP endpoints, which take ADMIN_TOKEN.
ADMIN_SERVICES = frozenset({"risk_manager", "notifier", "execution_service"})


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
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
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
        self.data_dir.chmod(0o700)
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
        # umask 077: the AOF, the RDB and the log are the owner's alone (redis-server creates
        # them with the umask it inherits); the password is in the config file, not argv
        subprocess.run([exe, str(config)], check=True, umask=0o077)
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
    """A PostgreSQL cluster that trusts nobody: scram-sha-256 password authentication on
    every connection (socket and TCP). The cluster's superuser is ``postgres`` (its
    password in ``superuser.password``, used only to create the role and the database);
    ``cdb_user`` owns the database ``claire_de_binare`` and is no superuser: it runs the
    migrations (it owns every table they create) and the services."""

    data_dir: Path
    port: int = 15432
    user: str = "cdb_user"
    database: str = "claire_de_binare"
    superuser: str = "postgres"

    @property
    def cluster(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def password(self) -> str:
        """``cdb_user``'s password, generated once per data directory (mode 0600)."""
        return _secret(self.data_dir / "cdb_user.password")

    @property
    def superuser_password(self) -> str:
        return _secret(self.data_dir / "superuser.password")

    def _run(self, *args: str) -> None:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd="/")

    def _psql(self, sql: str, *, database: str = "postgres") -> str:
        """Run ``sql`` as the cluster's superuser over TCP (password from the environment,
        never in argv)."""
        env = {**os.environ, "PGPASSWORD": self.superuser_password}
        return subprocess.run(
            [
                str(pg_bin_dir() / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.superuser,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                sql,
            ],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout.strip()

    def _check_not_trusting(self) -> None:
        hba = self.cluster / "pg_hba.conf"
        with contextlib.suppress(OSError):
            rules = [
                line.split()
                for line in hba.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            ]
            if any(rule and rule[-1] == "trust" for rule in rules):
                raise RuntimeError(
                    f"the PostgreSQL cluster in {self.cluster} trusts local connections"
                    " (made by an older cdb): `cdb demo --fresh` recreates it with password"
                    " authentication (and wipes the demo's data)"
                )

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
            pwfile = self.data_dir / "initdb.pw"
            write_private(pwfile, self.superuser_password + "\n")
            if os.geteuid() == 0:
                shutil.chown(pwfile, "postgres")
            try:
                self._run(
                    str(bin_dir / "initdb"),
                    "-D", str(self.cluster),
                    "-U", self.superuser,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                )  # fmt: skip
            finally:
                pwfile.unlink(missing_ok=True)
        elif (self.cluster / "pg_hba.conf").exists():
            self._check_not_trusting()
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
        self._provision()

    def _provision(self) -> None:
        """``cdb_user`` (login, password, no superuser) and its database, once."""
        quoted = self.password.replace("'", "''")
        if self._psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{self.user}'") != "1":
            self._psql(
                f"CREATE ROLE {self.user} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
                f" PASSWORD '{quoted}'"
            )
        if self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'") != "1":
            self._psql(f"CREATE DATABASE {self.database} OWNER {self.user}")

    def create_database(self, name: str) -> None:
        """A fresh database owned by ``cdb_user`` (bench runs), dropped first if it exists."""
        self._psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self._psql(f"CREATE DATABASE {name} OWNER {self.user}")

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
        """Both servers, or neither that this call started: a Redis left running after
        PostgreSQL failed would be taken for a running stack by the next start, with the
        passwords of a data directory that may be gone."""
        redis_was_running = _port_open(self.redis.port)
        self.redis.start()
        try:
            self.postgres.start()
        except BaseException:
            if not redis_was_running:
                self.redis.stop()
            raise

    def stop(self) -> None:
        self.redis.stop()
        self.postgres.stop()

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin.token"

    @property
    def admin_token(self) -> str:
        """The credential of state-changing endpoints, in ``admin.token`` (mode 0600)."""
        return _secret(self.admin_token_path)

    @property
    def console_password_path(self) -> Path:
        return self.data_dir / "console.password"

    def console_password(self) -> str:
        """The console's login password, in ``console.password`` (mode 0600)."""
        return _secret(self.console_password_path)

    def service_env(self, service: str) -> dict[str, str]:
        """``env()`` for one service: its own Redis user when it has one, never the admin
        password (mexc_sim, which uses no Redis, gets no Redis password at all)."""
        env = self.env()
        if service in ADMIN_SERVICES:  # the credential of their state-changing endpoints
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
            "POSTGRES_PASSWORD": self.postgres.password,
        }
