"""``cdb ml``: synth, train (file and PostgreSQL), evaluate with table, HTML and PNG."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import psycopg
from typer.testing import CliRunner

from cdb.cli import app
from cdb.core.config import ServiceSettings
from cdb.core.db import apply_migrations, migrations_dir
from cdb.ml_advisor.candle_history import history_hash, load_history_file
from cdb.ml_advisor.model_store import list_versions, load_model
from tests.support import free_port

runner = CliRunner()


def cdb(*args: str, env: dict[str, str] | None = None) -> str:
    result = runner.invoke(app, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def png_size(data: bytes) -> tuple[int, int]:
    """Walk the PNG's chunks, checking every CRC; the image's width and height."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks = 8, []
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        chunks.append((kind, body))
        offset += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    assert any(kind == b"IDAT" for kind, _ in chunks)
    idat = b"".join(body for kind, body in chunks if kind == b"IDAT")
    assert len(zlib.decompress(idat)) > 0
    width, height = struct.unpack(">II", chunks[0][1][:8])
    return width, height


def test_train_then_evaluate_from_a_file(tmp_path: Path) -> None:
    history = tmp_path / "history.parquet"
    models = tmp_path / "models"
    out = cdb("ml", "synth", "--out", str(history), "--symbols", "6", "--days", "3.5")
    assert "wrote 30,240 bars of 6 symbols" in out
    out = cdb(
        "ml",
        "train",
        "--file",
        str(history),
        "--until",
        "2025-01-03T00:00:00Z",
        "--model-dir",
        str(models),
        "--rounds",
        "80",
        "--folds",
        "3",
        "--version",
        "m1",
    )
    assert "trained m1" in out and "fold 3:" in out
    manifest = load_model(models, "m1").manifest
    frame = load_history_file(history)
    assert manifest.training_data_hash == history_hash(
        frame[frame["time"] < 1_735_862_400].reset_index(drop=True)
    )
    assert manifest.training_end < 1_735_862_400

    reports = tmp_path / "reports"
    out = cdb(
        "ml",
        "evaluate",
        "--file",
        str(history),
        "--model-dir",
        str(models),
        "--out-dir",
        str(reports),
    )
    words = " ".join(out.split())
    assert "momentum" in words and "out of sample" in words
    assert "hit rate @15m" in words and "PnL after fees" in words
    (target,) = reports.iterdir()
    summary = json.loads((target / "summary.json").read_text())
    assert summary["training_overlap_bars"] == 0 and summary["rule"] == "momentum"
    assert [s["strategy"] for s in summary["strategies"]] == ["momentum", "model"]
    assert summary["start"] > manifest.training_end
    page = (target / "evaluation.html").read_text()
    assert "Plotly.newPlot" in page and "cumulative paper PnL" in page
    assert png_size((target / "evaluation.png").read_bytes()) == (1200, 800)
    signals = (target / "signals.csv").read_text().splitlines()
    assert (
        signals[0]
        == "strategy,symbol,time,side,confidence,entry,exit,return_pct,hit,fees_usdt,pnl_usdt"
    )
    assert {line.split(",")[0] for line in signals[1:]} == {"momentum", "model"}

    # in-sample evaluation is refused unless asked for
    result = runner.invoke(
        app,
        [
            "ml",
            "evaluate",
            "--file",
            str(history),
            "--model-dir",
            str(models),
            "--since",
            "2025-01-01T12:00:00Z",
            "--no-png",
            "--out-dir",
            str(reports),
        ],
    )
    assert result.exit_code == 2
    assert "inside the model's training period" in result.output


def test_bad_sources_get_one_clear_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ml", "train", "--model-dir", str(tmp_path)])
    assert result.exit_code == 2 and "--file PATH or --from-db" in result.output
    (tmp_path / "h.csv").write_text("time,open\n60,1\n")
    result = runner.invoke(app, ["ml", "train", "--file", str(tmp_path / "h.csv")])
    assert result.exit_code == 2
    assert "missing column(s) symbol, close, high, low, vol, amount" in result.output
    unreachable = {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(free_port())}
    result = runner.invoke(app, ["ml", "train", "--from-db"], env=unreachable)
    assert result.exit_code == 2 and "cannot read the candles table" in result.output
    result = runner.invoke(app, ["ml", "evaluate", "--file", "x.csv", "--model-dir", str(tmp_path)])
    assert result.exit_code == 2 and "no trained model" in result.output


def _db_env(postgresql: Any) -> dict[str, str]:
    info = postgresql.info
    return {
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": str(info.port),
        "POSTGRES_DB": info.dbname,
        "POSTGRES_USER": info.user,
        "POSTGRES_PASSWORD": "",
    }


async def test_train_from_the_candles_table(
    postgresql: Any, settings: ServiceSettings, tmp_path: Path
) -> None:
    await apply_migrations(settings)
    cdb("ml", "synth", "--out", str(tmp_path / "h.csv"), "--symbols", "3", "--days", "1")
    frame = load_history_file(tmp_path / "h.csv")
    with (
        postgresql.cursor() as cur,
        cur.copy(
            "COPY candles (symbol, open_time, open, close, high, low, volume, turnover, event_id)"
            " FROM STDIN"
        ) as copy,
    ):
        for row in frame.itertuples(index=False):
            copy.write_row(
                (
                    row.symbol,
                    _ts(row.time),
                    row.open,
                    row.close,
                    row.high,
                    row.low,
                    row.vol,
                    row.amount,
                    f"e{row.time}",
                )
            )
    postgresql.commit()
    models = tmp_path / "models"
    out = cdb(
        "ml",
        "train",
        "--from-db",
        "--model-dir",
        str(models),
        "--rounds",
        "20",
        "--folds",
        "2",
        env=_db_env(postgresql),
    )
    assert "trained" in out
    (manifest,) = list_versions(models)
    assert manifest.training_data_hash == history_hash(frame)  # same candles, same hash
    assert cdb("ml", "models", "--model-dir", str(models)).startswith(manifest.version)


def _ts(seconds: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).isoformat()


async def test_the_migration_rolls_back(postgresql: Any, settings: ServiceSettings) -> None:
    await apply_migrations(settings)
    rollback = (migrations_dir() / "0004_ml_advisor.rollback.sql").read_text()
    with psycopg.connect(
        host="127.0.0.1",
        port=postgresql.info.port,
        dbname=postgresql.info.dbname,
        user=postgresql.info.user,
        autocommit=True,
    ) as conn:
        assert conn.execute("SELECT to_regclass('ml_shadow_comparison')").fetchone()[0]
        conn.execute(rollback)
        assert conn.execute("SELECT to_regclass('candles')").fetchone()[0] is None
        assert conn.execute("SELECT to_regclass('ml_shadow_comparison')").fetchone()[0] is None
        assert conn.execute("SELECT to_regclass('ml_signals')").fetchone()[0]  # 0001 untouched
