"""PostgreSQL: one psycopg 3 async pool per process, schema by versioned SQL migrations.

Migrations are plain SQL files in ``migrations/`` applied by yoyo-migrations (a kept
migration tool with a lock table, so replicas starting together apply each once). A
database whose yoyo table already lists every one is left alone without loading yoyo.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import psycopg_pool
from psycopg import AsyncConnection, AsyncCursor, Connection
from psycopg.errors import UndefinedTable
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from cdb.core.config import PostgresSettings

# The kernel owns the PostgreSQL driver (an import contract holds it): services and tools
# take these names from here, so the driver is chosen and upgraded in one place.
__all__ = [
    "DB_ERRORS",
    "AsyncConnection",
    "AsyncCursor",
    "Database",
    "DatabaseError",
    "Jsonb",
    "UndefinedTable",
    "apply_migrations",
    "connect",
    "connect_sync",
    "dict_row",
    "migrations_dir",
]

DatabaseError = psycopg.Error
# Everything a database call can raise that is the database's fault (refused, gone, the
# pool exhausted), for callers that report it rather than crash.
DB_ERRORS: tuple[type[BaseException], ...] = (psycopg.Error, psycopg_pool.PoolTimeout, OSError)

log = logging.getLogger("cdb.db")


async def connect(settings: PostgresSettings, timeout_s: int = 5) -> AsyncConnection[Any]:
    """One connection outside the pool, for a reader (autocommit: every query sees the
    latest committed rows)."""
    return await AsyncConnection.connect(
        settings.postgres_conninfo(),
        password=settings.postgres_password.get_secret_value() or None,
        connect_timeout=timeout_s,
        autocommit=True,
    )


def connect_sync(settings: PostgresSettings, timeout_s: int = 10) -> Connection[Any]:
    """A blocking connection, for offline tools that read a table into memory."""
    return psycopg.connect(
        settings.postgres_conninfo(),
        password=settings.postgres_password.get_secret_value() or None,
        connect_timeout=timeout_s,
    )


def migrations_dir() -> Path:
    """``$CDB_MIGRATIONS_DIR``, else ``migrations/`` of the checkout or the image (/app)."""
    configured = os.environ.get("CDB_MIGRATIONS_DIR")
    if configured:
        return Path(configured)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "migrations"
        if candidate.is_dir() and any(candidate.glob("*.sql")):
            return candidate
    return Path("/app/migrations")


def _yoyo_url(settings: PostgresSettings) -> str:
    password = quote(settings.postgres_password.get_secret_value(), safe="")
    auth = quote(settings.postgres_user, safe="") + (f":{password}" if password else "")
    return (
        f"postgresql+psycopg://{auth}@{settings.postgres_host}:{settings.postgres_port}"
        f"/{quote(settings.postgres_db, safe='')}"
    )


def _apply(settings: PostgresSettings, directory: Path) -> list[str]:
    from yoyo import get_backend, read_migrations

    backend = get_backend(_yoyo_url(settings))
    migrations = read_migrations(str(directory))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return [m.id for m in pending]


def _migration_ids(directory: Path) -> set[str] | None:
    """The ids yoyo reads from ``directory``; None when it holds anything yoyo runs
    differently (a post-apply hook, a Python migration) or nothing at all."""
    files = [path for path in directory.iterdir() if path.suffix in (".sql", ".py")]
    if not files or any(
        path.suffix == ".py" or path.name.startswith("post-apply") for path in files
    ):
        return None
    return {path.stem for path in files if not path.name.endswith(".rollback.sql")}


async def _recorded_as_applied(settings: PostgresSettings, directory: Path) -> bool:
    """Whether yoyo's own table lists every migration of ``directory`` as applied: then
    there is nothing for yoyo to do, and a service need not load it (yoyo, sqlparse and
    importlib_metadata: about 4 MiB it would carry for the rest of its life). Anything
    else (no table yet, a migration missing, see :func:`_migration_ids`) is left to
    yoyo, which decides under its lock."""
    wanted = _migration_ids(directory)
    if wanted is None:
        return False
    try:
        async with await connect(settings) as conn:
            cursor = await conn.execute("SELECT migration_id FROM _yoyo_migration")
            recorded = {row[0] for row in await cursor.fetchall()}
    except psycopg.Error:
        return False
    return wanted <= recorded


async def apply_migrations(settings: PostgresSettings, directory: Path | None = None) -> list[str]:
    """Apply what is not applied yet; returns the ids applied now (empty when up to date)."""
    directory = directory or migrations_dir()
    if await _recorded_as_applied(settings, directory):
        return []
    applied = await asyncio.to_thread(_apply, settings, directory)
    if applied:
        log.info("migrations applied", extra={"migrations": applied})
    return applied


class Database:
    """The process's connection pool. Use ``async with db.transaction() as conn``."""

    def __init__(
        self,
        settings: PostgresSettings,
        *,
        min_size: int = 1,
        max_size: int = 5,
        application_name: str = "cdb",
    ) -> None:
        self.settings = settings
        # what pg_stat_activity shows for this process: lock waits are found by it
        self.application_name = application_name[:63]
        self.pool = AsyncConnectionPool(
            conninfo=settings.postgres_conninfo(),
            kwargs={
                "password": settings.postgres_password.get_secret_value() or None,
                "connect_timeout": 5,
                "application_name": self.application_name,
            },
            min_size=min_size,
            max_size=max_size,
            timeout=10.0,
            open=False,
            name="cdb",
        )

    async def open(self, wait: bool = True, timeout: float = 30.0) -> None:
        await self.pool.open(wait=wait, timeout=timeout)

    async def close(self) -> None:
        await self.pool.close()

    def connection(self) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        """A pooled connection; ``async with db.connection() as conn, conn.transaction():``."""
        return self.pool.connection()

    async def lock_waits(self) -> list[str]:
        """What this process's connections wait for in PostgreSQL: one line per backend
        blocked on a lock, with the blocking backends and what they run."""
        async with self.pool.connection(timeout=2.0) as conn:
            cursor = await conn.execute(
                "SELECT a.wait_event, left(a.query, 120),"
                " (SELECT string_agg(b.pid || ' (' || coalesce(b.application_name, '') || ': '"
                "   || left(coalesce(b.query, ''), 80) || ')', ', ')"
                "  FROM pg_stat_activity b WHERE b.pid = ANY(pg_blocking_pids(a.pid)))"
                " FROM pg_stat_activity a"
                " WHERE a.application_name = %s AND a.wait_event_type = 'Lock'"
                " AND a.pid <> pg_backend_pid()",
                (self.application_name,),
            )
            rows = await cursor.fetchall()
        return [
            f"postgres {event} lock for `{query}`, held by {blockers or 'another backend'}"
            for event, query, blockers in rows
        ]

    async def ping(self) -> bool:
        try:
            async with self.pool.connection(timeout=2.0) as conn:
                await conn.execute("SELECT 1")
            return True
        except Exception:
            return False
