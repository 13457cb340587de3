"""What the pages show, read from the books the services write (never a copy of them).

Every read runs in a READ ONLY transaction: the console cannot change a row even by
mistake. A table a newer release adds (``approvals``) may be missing on an older
database: its page then shows nothing instead of failing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from cdb.core.db import AsyncConnection, Database, UndefinedTable, dict_row

__all__ = ["Books", "Row"]

Row = dict[str, Any]
LIMIT = 50


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


class Books:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def _read(self, work: Callable[[AsyncConnection[Any]], Awaitable[Any]]) -> Any:
        async with self.db.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION READ ONLY")
            return await work(conn)

    async def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        async def work(conn: AsyncConnection[Any]) -> list[Row]:
            async with conn.cursor(row_factory=dict_row) as cursor:
                try:
                    await cursor.execute(sql.encode(), params)
                except UndefinedTable:
                    return []
                return list(await cursor.fetchall())

        result: list[Row] = await self._read(work)
        return result

    async def one(self, sql: str, params: tuple[Any, ...] = ()) -> Row | None:
        found = await self.rows(sql, params)
        return found[0] if found else None

    # -- overview ----------------------------------------------------------------------
    async def equity_series(self, limit: int = 500) -> list[Row]:
        """Equity and exposure (USDT) in time order, the newest ``limit`` points."""
        return list(
            reversed(
                await self.rows(
                    "SELECT recorded_at, equity, exposure, realized_pnl FROM equity"
                    " ORDER BY recorded_at DESC, id DESC LIMIT %s",
                    (limit,),
                )
            )
        )

    # -- positions -----------------------------------------------------------------------
    async def open_positions(self) -> list[Row]:
        """Open positions with their mark (the symbol's latest candle close) and PnL."""
        found = await self.rows(
            "SELECT p.order_id, p.symbol, p.side, p.quantity, p.entry_price, p.stop_loss,"
            " p.opened_at, m.close AS mark, m.open_time AS mark_at"
            " FROM positions p LEFT JOIN LATERAL ("
            "  SELECT c.close, c.open_time FROM candles c WHERE c.symbol = p.symbol"
            "  ORDER BY c.open_time DESC LIMIT 1) m ON true"
            " WHERE p.status = 'open' ORDER BY p.opened_at DESC"
        )
        for row in found:
            mark = row["mark"] if row["mark"] is not None else row["entry_price"]
            sign = 1.0 if row["side"] == "long" else -1.0
            row["mark"] = mark
            row["unrealized_pnl"] = sign * (mark - row["entry_price"]) * row["quantity"]
            row["notional"] = mark * row["quantity"]
        return found

    # -- trades --------------------------------------------------------------------------
    async def orders(self) -> list[Row]:
        return await self.rows(
            "SELECT order_id, symbol, side, quantity, notional, price, stop_loss, mode,"
            " status, reason, created_at FROM orders ORDER BY created_at DESC LIMIT %s",
            (LIMIT,),
        )

    async def fills(self) -> list[Row]:
        return await self.rows(
            "SELECT order_id, symbol, side, kind, price, quantity, fee, realized_pnl,"
            " created_at FROM fills ORDER BY created_at DESC LIMIT %s",
            (LIMIT,),
        )

    async def closed_trades(self) -> list[Row]:
        return await self.rows(
            "SELECT order_id, symbol, side, quantity, entry_price, exit_price, realized_pnl,"
            " opened_at, closed_at FROM positions WHERE status = 'closed'"
            " ORDER BY closed_at DESC LIMIT %s",
            (LIMIT,),
        )

    # -- signals -------------------------------------------------------------------------
    async def signals(self) -> list[Row]:
        """The latest rule signals, each with the risk decision and the ML advisor's view
        of the same symbol and side within 15 minutes, when there is one."""
        found = await self.rows(
            "SELECT s.signal_id, s.symbol, s.side, s.confidence, s.reason, s.strategy,"
            " s.price, s.pct_change, s.signal_ts, d.decision, d.reason AS decision_reason,"
            " ml.model, ml.model_version, ml.confidence AS ml_confidence, ml.top_features"
            " FROM signals s LEFT JOIN risk_decisions d ON d.signal_id = s.signal_id"
            " LEFT JOIN LATERAL (SELECT m.model, m.model_version, m.confidence,"
            "   m.top_features FROM ml_signals m WHERE m.symbol = s.symbol AND m.side = s.side"
            "   AND m.signal_ts BETWEEN s.signal_ts - interval '15 minutes'"
            "   AND s.signal_ts + interval '15 minutes'"
            "   ORDER BY abs(extract(epoch FROM m.signal_ts - s.signal_ts)) LIMIT 1) ml ON true"
            " ORDER BY s.signal_ts DESC LIMIT %s",
            (LIMIT,),
        )
        for row in found:
            features = _json(row["top_features"]) or []
            row["top_features"] = sorted(
                features, key=lambda f: abs(float(f.get("contribution", 0))), reverse=True
            )[:3]
        return found

    async def ml_signals(self) -> list[Row]:
        found = await self.rows(
            "SELECT signal_id, symbol, side, model, model_version, confidence, price,"
            " top_features, signal_ts FROM ml_signals ORDER BY signal_ts DESC LIMIT 20"
        )
        for row in found:
            row["top_features"] = (_json(row["top_features"]) or [])[:3]
        return found

    # -- risk ----------------------------------------------------------------------------
    async def breaker(self) -> Row | None:
        return await self.one(
            "SELECT day, opening_equity, breaker_tripped_at, breaker_reason, reset_at"
            " FROM risk_days ORDER BY day DESC LIMIT 1"
        )

    async def risk_events(self) -> list[Row]:
        return await self.rows(
            "SELECT kind, signal_id, reason, details, created_at FROM risk_events"
            " ORDER BY created_at DESC, id DESC LIMIT %s",
            (LIMIT,),
        )

    async def breaker_days(self) -> list[Row]:
        return await self.rows(
            "SELECT day, opening_equity, breaker_tripped_at, breaker_reason, reset_at"
            " FROM risk_days WHERE breaker_tripped_at IS NOT NULL ORDER BY day DESC LIMIT 30"
        )

    # -- the bot -------------------------------------------------------------------------
    async def control_state(self) -> list[Row]:
        found = await self.rows(
            "SELECT service, bot, bot_uid, generation, config_hash, settings, applied_at"
            " FROM control_state ORDER BY service"
        )
        for row in found:
            row["settings"] = _json(row["settings"]) or {}
        return found

    async def audit(self) -> list[Row]:
        return await self.rows(
            "SELECT bot, generation, field, old_value, new_value, actor, applied_at"
            " FROM config_audit ORDER BY id DESC LIMIT 100"
        )

    # -- approvals -----------------------------------------------------------------------
    async def approvals(self, *, pending: bool) -> list[Row]:
        where = "state = 'pending'" if pending else "state <> 'pending'"
        order = "requested_at" if pending else "coalesce(decided_at, expires_at) DESC"
        found = await self.rows(
            "SELECT order_id, signal_id, symbol, side, order_json, details, state,"
            " requested_at, expires_at, decided_at, decided_by, reason"
            f" FROM approvals WHERE {where} ORDER BY {order} LIMIT %s",
            (LIMIT,),
        )
        return [_approval(row) for row in found]

    async def approval(self, order_id: str) -> Row | None:
        row = await self.one(
            "SELECT order_id, signal_id, symbol, side, order_json, details, state,"
            " requested_at, expires_at, decided_at, decided_by, reason"
            " FROM approvals WHERE order_id = %s",
            (order_id,),
        )
        return _approval(row) if row else None


def _approval(row: Row) -> Row:
    row["order"] = _json(row.pop("order_json")) or {}
    row["details"] = _json(row["details"]) or {}
    return row
