"""``cdb report``: books read from a real PostgreSQL, HTML written, PNGs rendered by Chromium."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

from cdb.core.config import ServiceSettings
from cdb.core.db import apply_migrations
from cdb.report import connect, count_rows, read_books
from cdb.report.render import write_report
from tests.support import seed_books

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_facts(path: Path) -> dict[str, int]:
    """Parse a PNG with the stdlib: every chunk's CRC, the header, and the pixel rows.

    Raises AssertionError when the file is not a well-formed PNG. Returns its width,
    height and how many distinct byte values the decompressed pixel data holds (a
    blank image has one or two).
    """
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), f"{path} is not a PNG"
    offset = len(PNG_SIGNATURE)
    idat = b""
    header: tuple[int, ...] = ()
    chunks: list[bytes] = []
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"{path}: bad CRC in {kind!r}"
        chunks.append(kind)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND", f"{path}: chunks {chunks}"
    pixels = zlib.decompress(idat)
    width, height = header[0], header[1]
    assert width > 0 and height > 0
    return {"width": width, "height": height, "distinct_bytes": len(set(pixels))}


async def test_report_from_postgres_writes_html_and_valid_pngs(
    settings: ServiceSettings, tmp_path: Path
) -> None:
    await apply_migrations(settings)
    conn = await connect(settings)
    try:
        await seed_books(conn)
        counts = await count_rows(conn)
        books = await read_books(conn)
    finally:
        await conn.close()
    assert counts["signals"] == 3 and counts["fills"] == 4 and counts["positions_closed"] == 2

    report = await write_report(books, tmp_path / "out", title="test day")

    page = report.html.read_text()
    assert "test day" in page and "PEPE_USDT" in page and "WIF_USDT" in page
    assert "chart-equity" in page and "chart-risk_events" in page
    assert '<script src="http' not in page  # plotly.js inlined: the report opens offline
    assert report.stats.signals == 3
    assert report.stats.wins == 1 and report.stats.closed_positions == 2
    assert report.stats.risk_events == 1
    assert abs(report.stats.end_equity - 10_080.7) < 1e-6  # type: ignore[operator]
    assert sorted(p.name for p in report.pngs) == [
        "equity.png",
        "risk_events.png",
        "signals.png",
        "trades.png",
    ]
    for png in report.pngs:
        facts = png_facts(png)
        assert (facts["width"], facts["height"]) == (1100, 520)
        assert facts["distinct_bytes"] > 16, f"{png.name} looks blank"


async def test_report_of_empty_books_says_so(settings: ServiceSettings, tmp_path: Path) -> None:
    await apply_migrations(settings)
    conn = await connect(settings)
    try:
        books = await read_books(conn)
    finally:
        await conn.close()
    report = await write_report(books, tmp_path, png=False)
    assert "no equity records yet" in report.html.read_text()
    assert report.pngs == [] and report.stats.orders == 0


def test_report_command_reads_postgres_from_the_environment(
    service_env: dict[str, str], settings: ServiceSettings, tmp_path: Path, monkeypatch: Any
) -> None:
    import asyncio

    from typer.testing import CliRunner

    from cdb.cli import app

    async def prepare() -> None:
        await apply_migrations(settings)
        conn = await connect(settings)
        try:
            await seed_books(conn)
        finally:
            await conn.close()

    asyncio.run(prepare())
    for key, value in service_env.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(app, ["report", "--out", str(tmp_path), "--no-png"])
    assert result.exit_code == 0, result.output
    assert "3 signals, 2 orders, 4 fills, 2 closed trades" in result.output
    assert (tmp_path / "report.html").exists()


def test_report_command_without_a_demo_database_says_how_to_get_one(
    tmp_path: Path, monkeypatch: Any
) -> None:
    from typer.testing import CliRunner

    from cdb.cli import app

    monkeypatch.delenv("POSTGRES_HOST", raising=False)
    monkeypatch.delenv("POSTGRES_PORT", raising=False)
    result = CliRunner().invoke(app, ["report", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "no demo database" in result.output and "make demo" in result.output
