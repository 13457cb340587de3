"""The demo's local servers trust nobody: PostgreSQL asks every client for a password
(scram-sha-256), cdb_user owns the database but is no superuser and still runs the
migrations; the password files are private from their first byte."""

from __future__ import annotations

import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr

from cdb.core.acl import ACCESS
from cdb.core.config import PostgresSettings
from cdb.core.db import apply_migrations
from cdb.localstack import LocalPostgres, LocalRedis, LocalStack, write_private
from tests.support import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[LocalPostgres]:
    server = LocalPostgres(tmp_path / "postgres", free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def login(server: LocalPostgres, password: str | None, host: str = "127.0.0.1") -> None:
    with psycopg.connect(
        host=host,
        port=server.port,
        user=server.user,
        dbname=server.database,
        password=password,
        connect_timeout=5,
    ) as conn:
        conn.execute("SELECT 1")


async def test_postgres_refuses_a_login_without_password_and_cdb_user_is_no_superuser(
    postgres: LocalPostgres,
) -> None:
    for host in ("127.0.0.1", str(postgres.data_dir)):  # TCP and the Unix socket
        with pytest.raises(psycopg.OperationalError, match="password"):
            login(postgres, None, host)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            login(postgres, "not-the-password", host)
    login(postgres, postgres.password)

    settings = PostgresSettings(
        postgres_port=postgres.port, postgres_password=SecretStr(postgres.password)
    )
    applied = await apply_migrations(settings)  # with cdb_user's own rights
    assert applied
    with psycopg.connect(
        host="127.0.0.1",
        port=postgres.port,
        user=postgres.user,
        dbname=postgres.database,
        password=postgres.password,
    ) as conn:
        role = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert role == (False, False, False)
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ).fetchone()
        assert owner == (postgres.user,)
        tables = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE tableowner <> current_user)"
            " FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
        assert tables is not None and tables[0] > 5 and tables[1] == 0
    for path in (postgres.data_dir / "cdb_user.password", postgres.data_dir / "superuser.password"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rules = [
        line.split()
        for line in (postgres.cluster / "pg_hba.conf").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert rules and {rule[-1] for rule in rules} == {"scram-sha-256"}


def test_private_files_are_never_readable_by_others(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a permissive umask, as a login shell often has
    try:
        path = tmp_path / "secret"
        write_private(path, "s3cret")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        path.chmod(0o644)  # an older file written before the fix
        write_private(path, "again")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def rewriting(persistence: dict[str, object]) -> bool:
    """Whether Redis is rewriting its AOF, or has a rewrite scheduled."""
    return any(persistence[k] for k in ("aof_rewrite_in_progress", "aof_rewrite_scheduled"))


def test_the_demo_redis_keeps_its_files_private_and_no_password_in_argv(tmp_path: Path) -> None:
    """Under a permissive umask (022, a login shell's), everything Redis writes in the data
    directory (AOF, log, ACL and config files, passwords) is the owner's alone, and no
    password appears on redis-server's command line (``ps``)."""
    import redis

    server = LocalRedis(tmp_path / "redis", free_port())
    old = os.umask(0o022)
    try:
        server.start()
    finally:
        os.umask(old)
    try:
        with redis.Redis(port=server.port, password=server.password) as admin:
            admin.xadd("cdb:signals", {"event": "{}"})
            admin.bgrewriteaof()
            pid = int(admin.info("server")["process_id"])
            # the rewrite's temporary files come and go: list the directory once it is over
            deadline = time.monotonic() + 30
            while rewriting(admin.info("persistence")):
                assert time.monotonic() < deadline, "the AOF rewrite did not finish in 30 s"
                time.sleep(0.05)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        secrets = [server.password, *(server.user_password(u) for u in ACCESS)]
        assert not any(secret in cmdline for secret in secrets), cmdline
        files = list(server.data_dir.rglob("*"))
        assert any("appendonly" in p.name for p in files)
        readable = [
            f"{p.relative_to(server.data_dir)} {oct(stat.S_IMODE(p.stat().st_mode))}"
            for p in files
            if stat.S_IMODE(p.stat().st_mode) & 0o077
        ]
        assert readable == [], f"readable by others: {readable}"
    finally:
        server.stop()


def test_a_stack_whose_postgres_fails_leaves_no_redis_behind(tmp_path: Path) -> None:
    """A Redis left running would be reused by the next start (its port is open) with the
    passwords of the failed run's data directory."""
    stack = LocalStack(tmp_path / "stack", redis_port=free_port(), postgres_port=free_port())
    (tmp_path / "stack" / "postgres").mkdir(parents=True)
    (tmp_path / "stack" / "postgres" / "pgdata").write_text("not a cluster")
    with pytest.raises(Exception):  # noqa: B017 - whatever PostgreSQL's start raises
        stack.start()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", stack.redis_port)) != 0
