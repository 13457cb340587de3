"""The ``cdb report`` command (registered in :mod:`cdb.cli`)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import typer
from pydantic import SecretStr

from cdb.core.config import PostgresSettings, load_settings
from cdb.localstack import LocalPostgres

ROOT = Path(__file__).resolve().parents[3]

__all__ = ["report", "report_from_postgres"]


async def report_from_postgres(settings: PostgresSettings, out: Path, *, png: bool) -> int:
    from cdb.report.books import connect, read_books
    from cdb.report.render import PngExportError, write_report

    conn = await connect(settings)
    try:
        books = await read_books(conn)
    finally:
        await conn.close()
    try:
        written = await write_report(books, out, title="cdb report: paper trading", png=png)
    except PngExportError as error:
        typer.echo(f"wrote {out / 'report.html'}; PNG export failed: {error}", err=True)
        return 1
    stats = written.stats
    typer.echo(
        f"wrote {written.html} ({stats.signals} signals, {stats.orders} orders, "
        f"{stats.fills} fills, {stats.closed_positions} closed trades)"
    )
    for path in written.pngs:
        typer.echo(f"wrote {path}")
    return 0


def report(
    out: Path = typer.Option(None, help="Output directory (default .cdb/reports/<time>)."),
    data_dir: Path = typer.Option(ROOT / ".cdb", help="The demo's data directory."),
    postgres_port: int = typer.Option(15432, help="The demo's PostgreSQL port."),
    png: bool = typer.Option(True, help="Also write a PNG of every chart (needs Chromium)."),
) -> None:
    """HTML report (equity, trades, signals per symbol, risk events) plus PNG charts.

    Reads PostgreSQL at POSTGRES_* when POSTGRES_HOST or POSTGRES_PORT is set; otherwise the
    demo's local database (started for the report if the demo is not running).
    """
    target = out or data_dir / "reports" / time.strftime("%Y%m%d-%H%M%S")
    if "POSTGRES_HOST" in os.environ or "POSTGRES_PORT" in os.environ:
        settings = load_settings(PostgresSettings)
        raise typer.Exit(asyncio.run(report_from_postgres(settings, target, png=png)))
    local = LocalPostgres(data_dir.resolve() / "postgres", postgres_port)
    if not (local.cluster / "PG_VERSION").exists():
        typer.echo(f"no demo database in {data_dir} (run: make demo)", err=True)
        raise typer.Exit(1)
    was_running = (local.cluster / "postmaster.pid").exists()
    local.start()
    try:
        settings = PostgresSettings(
            postgres_host="127.0.0.1",
            postgres_port=postgres_port,
            postgres_db=local.database,
            postgres_user=local.user,
            postgres_password=SecretStr(local.password),
        )
        code = asyncio.run(report_from_postgres(settings, target, png=png))
    finally:
        if not was_running:
            local.stop()
    raise typer.Exit(code)
