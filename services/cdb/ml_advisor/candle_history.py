"""Candle histories for training and evaluation: from a file or from PostgreSQL.

The canonical form is MEXC's kline layout, one row per bar: ``symbol``, ``time`` (bar open,
unix seconds), ``open``, ``close``, ``high``, ``low``, ``vol`` (contracts) and ``amount``
(USDT turnover). Files are CSV or Parquet with exactly those columns; the database source is
the ``candles`` table ml_advisor fills from ``cdb:candles``.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from cdb.core.config import PostgresSettings
from cdb.core.db import connect_sync

__all__ = [
    "HISTORY_COLUMNS",
    "HistoryError",
    "history_hash",
    "load_history_db",
    "load_history_file",
    "parse_when",
    "validate_history",
]

HISTORY_COLUMNS: tuple[str, ...] = (
    "symbol",
    "time",
    "open",
    "close",
    "high",
    "low",
    "vol",
    "amount",
)
PRICE_COLUMNS = ("open", "close", "high", "low")
BAR_SECONDS = 60


class HistoryError(ValueError):
    """A candle history that cannot be used, with the reason in words."""


def parse_when(value: str) -> int:
    """Unix seconds from ``1736555700`` or an ISO time (``2025-01-11T00:35:00Z``)."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise HistoryError(f"not a time: {value!r} (unix seconds or ISO 8601)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def validate_history(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check and normalise a history: sorted by (symbol, time), typed, without duplicates."""
    missing = [c for c in HISTORY_COLUMNS if c not in frame.columns]
    if missing:
        raise HistoryError(
            f"{source}: missing column(s) {', '.join(missing)}; "
            f"expected MEXC kline layout {', '.join(HISTORY_COLUMNS)}"
        )
    if frame.empty:
        raise HistoryError(f"{source}: no candles")
    out = pd.DataFrame({"symbol": frame["symbol"].astype(str)})
    for column in HISTORY_COLUMNS[1:]:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = int(values.isna().sum())
        if bad:
            raise HistoryError(f"{source}: {bad} non-numeric or empty value(s) in {column!r}")
        out[column] = values.astype("int64" if column == "time" else "float64")
    if not np.isfinite(out[list(HISTORY_COLUMNS[2:])].to_numpy()).all():
        raise HistoryError(f"{source}: infinite values in prices or volumes")
    if (out[list(PRICE_COLUMNS)] <= 0).any().any():
        raise HistoryError(f"{source}: prices must be > 0")
    if (out[["vol", "amount"]] < 0).any().any():
        raise HistoryError(f"{source}: volumes must be >= 0")
    if (out["high"] < out["low"]).any():
        raise HistoryError(
            f"{source}: {int((out['high'] < out['low']).sum())} bar(s) with high < low"
        )
    if (out["time"] % BAR_SECONDS != 0).any():
        raise HistoryError(f"{source}: bar times must be whole minutes (unix seconds)")
    duplicated = out.duplicated(["symbol", "time"])
    if duplicated.any():
        first = out[duplicated].iloc[0]
        raise HistoryError(
            f"{source}: {int(duplicated.sum())} duplicate bar(s), e.g. {first['symbol']} "
            f"at {int(first['time'])}"
        )
    return out.sort_values(["symbol", "time"], kind="mergesort").reset_index(drop=True)


def load_history_file(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file in MEXC's kline layout with a ``symbol`` column."""
    if not path.is_file():
        raise HistoryError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif suffix in (".csv", ".gz", ".txt"):
            frame = pd.read_csv(path)
        else:
            raise HistoryError(f"{path}: unknown format {suffix!r} (use .csv or .parquet)")
    except HistoryError:
        raise
    except Exception as error:
        raise HistoryError(f"{path}: unreadable: {error}") from None
    return validate_history(frame, str(path))


def load_history_db(
    settings: PostgresSettings,
    *,
    since: int | None = None,
    until: int | None = None,
    symbols: list[str] | None = None,
) -> pd.DataFrame:
    """Candles from the ``candles`` table (filled by ml_advisor from ``cdb:candles``)."""
    query = (
        "SELECT symbol, extract(epoch FROM open_time)::bigint AS time, open, close, high, low,"
        " volume AS vol, turnover AS amount FROM candles WHERE interval = 'Min1'"
    )
    params: list[object] = []
    if since is not None:
        query += " AND open_time >= to_timestamp(%s)"
        params.append(since)
    if until is not None:
        query += " AND open_time < to_timestamp(%s)"
        params.append(until)
    if symbols:
        query += " AND symbol = ANY(%s)"
        params.append(symbols)
    query += " ORDER BY symbol, open_time"
    with connect_sync(settings) as conn, conn.cursor() as cur:
        cur.execute(query, params)
        rows = cur.fetchall()
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    source = f"postgres candles table ({settings.postgres_host}:{settings.postgres_port})"
    return validate_history(frame, source)


def history_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of the canonical history: the same candles always give the same hash."""
    digest = hashlib.sha256()
    digest.update("\n".join(frame["symbol"].tolist()).encode())
    digest.update(np.ascontiguousarray(frame["time"].to_numpy(np.int64)).tobytes())
    for column in HISTORY_COLUMNS[2:]:
        digest.update(np.ascontiguousarray(frame[column].to_numpy(np.float64)).tobytes())
    return digest.hexdigest()
