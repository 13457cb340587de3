"""The live view in textual's pilot, reading a real PostgreSQL, a real Redis bus and a real
service process's /health and /metrics.
"""

from __future__ import annotations

import html
import re
import time
from pathlib import Path
from typing import Any

from textual.widgets import DataTable, Static

from cdb.core.bus import Bus
from cdb.core.config import ServiceSettings
from cdb.core.db import apply_migrations
from cdb.core.events import Candle, MarketData
from cdb.report.books import connect
from cdb.view.app import DashboardApp
from cdb.view.source import DashboardSource, SourceConfig
from tests.support import ServiceProcess, free_port, seed_books

MOVES = {
    "PEPE_USDT": (0.0000112, 11.2),
    "WIF_USDT": (2.31, 7.4),
    "SOL_USDT": (190.5, 4.1),
    "BTC_USDT": (97_000.0, 0.4),
    "ETH_USDT": (3_400.0, -0.8),
    "DOGE_USDT": (0.31, -3.9),
    "XRP_USDT": (2.20, -6.6),
}


def cells(app: DashboardApp, panel: str) -> list[list[str]]:
    table = app.query_one(f"#{panel}", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def open_position(conn: Any) -> None:
    await conn.execute(
        "INSERT INTO ml_signals (signal_id, event_id, symbol, side, model, model_version,"
        " confidence, price, signal_ts) VALUES ('ml-1', 'ev-ml-1', 'WIF_USDT', 'long',"
        " 'xgboost', 'gbt-7', 0.83, 2.3, now())"
    )
    await conn.execute(
        "INSERT INTO signals (signal_id, event_id, symbol, side, confidence, reason, strategy,"
        " price, pct_change, signal_ts) VALUES ('sig-open', 'ev-open', 'SOL_USDT', 'long', 0.41,"
        " 'momentum', 'momentum', 180.0, 4.1, now())"
    )
    await conn.execute(
        "INSERT INTO orders (order_id, signal_id, symbol, side, quantity, notional, price,"
        " stop_loss, mode, status) VALUES ('ord-open', 'sig-open', 'SOL_USDT', 'long', 5.0,"
        " 900.0, 180.0, 176.4, 'paper', 'filled')"
    )
    await conn.execute(
        "INSERT INTO positions (position_id, order_id, symbol, side, quantity, entry_price,"
        " stop_loss, status) VALUES ('pos-open', 'ord-open', 'SOL_USDT', 'long', 5.0, 180.0,"
        " 176.4, 'open')"
    )


async def test_view_renders_real_books_bus_and_service_health(
    settings: ServiceSettings, service_env: dict[str, str], bus: Bus, tmp_path: Path
) -> None:
    await apply_migrations(settings)
    conn = await connect(settings)
    try:
        await seed_books(conn)
        await open_position(conn)
        await conn.execute(
            "INSERT INTO notifications (key, kind, severity, group_key, title, body) VALUES"
            " ('event:x', 'circuit_breaker', 'critical', 'g', 'Circuit breaker tripped', '')"
        )
        await conn.execute(
            "INSERT INTO notification_deliveries (key, channel, status) VALUES"
            " ('event:x', 'tgram-1', 'sent')"
        )
        await conn.commit()
    finally:
        await conn.close()
    now = int(time.time())
    for symbol, (price, pct) in MOVES.items():
        await bus.publish(
            MarketData(symbol=symbol, price=price, volume=250_000.0, pct_change=pct, timestamp=now)
        )
    await bus.publish(
        Candle(
            symbol="BTC_USDT",
            open_time=now - 60,
            open=96_900.0,
            high=97_100.0,
            low=96_800.0,
            close=97_000.0,
            volume=10.0,
            turnover=970_000.0,
        )
    )

    with ServiceProcess("cdb.risk_manager", service_env, tmp_path) as risk:
        risk.wait_healthy()
        silent = f"http://127.0.0.1:{free_port()}"  # a service that is not running
        source = DashboardSource(
            SourceConfig.from_settings(settings, {"risk_manager": risk.url, "bot_ws": silent})
        )
        app = DashboardApp(source, interval_s=0.3)
        try:
            async with app.run_test(size=(220, 60)) as pilot:
                while app.refreshes < 3:
                    await pilot.pause(0.1)
                gainers = cells(app, "gainers")
                losers = cells(app, "losers")
                signals = cells(app, "signals")
                fills = cells(app, "fills")
                positions = cells(app, "positions")
                ml = cells(app, "ml_signals")
                services = {row[0]: row for row in cells(app, "services")}
                account = str(app.query_one("#account", Static).render())
                screen = app.export_screenshot()
                (tmp_path / "view.svg").write_text(screen)
        finally:
            await source.close()

    assert [row[0] for row in gainers] == [
        "PEPE_USDT",
        "WIF_USDT",
        "SOL_USDT",
        "BTC_USDT",
    ]
    assert gainers[0][2] == "+11.20%"
    assert [row[0] for row in losers] == ["XRP_USDT", "DOGE_USDT", "ETH_USDT"]
    assert [row[1] for row in signals] == ["SOL_USDT", "PEPE_USDT", "WIF_USDT", "PEPE_USDT"]
    assert signals[0][3] == "0.41"  # confidence
    assert len(fills) == 4 and {row[2] for row in fills} == {"open", "close"}
    # the open SOL long is marked at the newest market price: (190.5 - 180) * 5
    assert positions == [["SOL_USDT", "long", "5", "180", "190.5", "+52.50"]]
    assert [row[1:] for row in ml] == [["WIF_USDT", "long", "0.83", "gbt-7"]]
    assert services["risk_manager"][1] == "ok"
    assert services["risk_manager"][2].endswith("events/s")  # a rate from two /metrics reads
    assert services["bot_ws"][1].startswith("unreachable")
    assert "armed" in account  # risk_circuit_breaker_active = 0 from risk_manager's /metrics
    assert "10,000.00 USDT" in account  # risk_equity_usdt: its starting equity
    assert "rejected: max exposure" in account  # the newest risk event from PostgreSQL
    assert "last told   Circuit breaker tripped (tgram-1 sent)" in account  # the notifier
    text = html.unescape(re.sub(r"<[^>]+>", "", screen)).replace("\xa0", " ")
    assert "PEPE_USDT" in text and "Open positions" in text and "Top 5 gainers" in text
