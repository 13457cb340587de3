"""End to end through the three services as processes: market_data → signal → order →
fill → position in PostgreSQL (published directly, and from a mexc_sim pump through
bot_ws), and a scripted price path that hits the stop-loss."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cdb.core.bus import Bus
from cdb.core.events import Stream
from tests.support import (
    ROOT,
    SIM_CLOCK,
    Pipeline,
    ServiceProcess,
    candle,
    eventually_async,
    free_port,
    market,
    query,
    scalar,
)

pytestmark = pytest.mark.slow


async def test_a_pump_becomes_a_position_and_its_stop_loss_closes_it(
    bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    pipeline = Pipeline(service_env, tmp_path, PAPER_SLIPPAGE_BPS="0").start()
    try:
        await bus.publish(market("PUMP_USDT", 4.5, price=2.0))  # a gainer: long
        await bus.publish(market("CALM_USDT", 1.0, price=5.0))  # below threshold: nothing
        await eventually_async(
            lambda: scalar(service_env, "SELECT count(*) FROM positions") == 1,
            what="position opened",
        )
        signal_row = query(service_env, "SELECT symbol, side, confidence FROM signals")
        assert signal_row == [("PUMP_USDT", "long", pytest.approx(0.45))]
        order = query(
            service_env,
            "SELECT o.status, o.notional, o.stop_loss, f.price, f.fee FROM orders o"
            " JOIN fills f ON f.order_id = o.order_id",
        )
        status, notional, stop, fill_price, fee = order[0]
        assert status == "filled"
        assert notional == pytest.approx(1000.0)  # 10 % of 10 000 USDT
        assert stop == pytest.approx(2.0 * 0.98)  # 2 % stop
        assert fill_price == pytest.approx(2.0)
        assert fee == pytest.approx(1000.0 * 0.0002)  # MEXC taker fee 0.02 %
        await eventually_async(
            lambda: scalar(service_env, "SELECT status FROM risk_positions") == "open",
            what="risk book saw the fill",
        )

        # The scripted path, bars after the entry: 1.99 (no stop), then a bar whose low
        # reaches 1.95 < 1.96. (A bar that began before the entry would count only its close.)
        after = int(time.time()) + 1
        await bus.publish(
            candle("PUMP_USDT", low=1.97, high=2.01, open_=2.0, close=1.99, open_time=after)
        )
        await bus.publish(
            candle("PUMP_USDT", low=1.95, high=1.99, open_=1.99, close=1.955, open_time=after + 60)
        )
        await eventually_async(
            lambda: scalar(service_env, "SELECT status FROM risk_positions") == "closed",
            what="stop-loss close reached the risk book",
        )
        exit_price, pnl = query(service_env, "SELECT exit_price, realized_pnl FROM positions")[0]
        assert exit_price == pytest.approx(1.96)
        assert pnl == pytest.approx((1.96 - 2.0) * 500.0)
        equity = pipeline.procs["risk_manager"].status()["book"]["equity_usdt"]
        fees = scalar(service_env, "SELECT sum(fee) FROM fills")
        assert equity == pytest.approx(10_000.0 + pnl - fees)
        ex = pipeline.procs["execution_service"].status()
        assert ex["open_positions"] == 0
    finally:
        pipeline.stop()


async def test_control_changes_the_threshold_live_and_status_shows_it(
    bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    from cdb.core.events import Control, ControlSettings

    pipeline = Pipeline(service_env, tmp_path).start("signal_engine")
    try:
        engine = pipeline.procs["signal_engine"]
        assert engine.status()["in_force"]["threshold_pct"] == 3.0
        await bus.publish(
            Control(
                bot="b",
                generation=2,
                config_hash="h2",
                timestamp=1.0,
                settings=ControlSettings(signal_threshold_pct=6.0),
            ),
            Stream.CONTROL,
        )
        await eventually_async(lambda: engine.status()["in_force"]["threshold_pct"] == 6.0)
        await bus.publish(market("AAA_USDT", 4.0))  # below the new threshold
        await bus.publish(market("BBB_USDT", 7.0))
        await eventually_async(lambda: scalar(service_env, "SELECT count(*) FROM signals") == 1)
        assert query(service_env, "SELECT symbol FROM signals") == [("BBB_USDT",)]
        pipeline.restart("signal_engine")  # the live config survives a restart
        engine = pipeline.procs["signal_engine"]
        assert engine.status()["in_force"]["threshold_pct"] == 6.0

        await bus.publish(
            Control(
                bot="b",
                generation=3,
                config_hash="h3",
                timestamp=2.0,
                settings=ControlSettings(paused=True),
            ),
            Stream.CONTROL,
        )
        await eventually_async(lambda: engine.status()["in_force"]["paused"] is True)
        await bus.publish(market("CCC_USDT", 9.0))
        metrics = f"{engine.url}/metrics"
        await eventually_async(
            lambda: (
                'signal_engine_signals_suppressed_total{reason="paused"} 1.0'
                in httpx.get(metrics).text
            )
        )
        text = httpx.get(metrics).text
        assert "signal_engine_status 1.0" in text
        assert 'signals_generated_total{side="long"}' not in text  # none since the restart
        assert scalar(service_env, "SELECT count(*) FROM signals") == 1
        assert engine.status()["in_force"]["threshold_pct"] == 6.0  # merged, not replaced
    finally:
        pipeline.stop()


async def test_a_simulated_pump_through_bot_ws_becomes_a_position(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    """mexc_sim (pump scenario, 60x time) → bot_ws screener → market_data → … → position."""
    sim_port = free_port()
    sim_args = [
        "--port",
        str(sim_port),
        "--symbols",
        "6",
        "--seed",
        "3",
        "--speed",
        "60",
        "--scenario",
        "pump",
        "--pump-every-min",
        "2",
        "--pump-pct",
        "9",
        "--history-min",
        "30",
    ]
    with (tmp_path / "mexc_sim.log").open("ab") as log:
        sim = subprocess.Popen(
            [sys.executable, "-m", "cdb.mexc_sim", *sim_args], stdout=log, stderr=log, cwd=ROOT
        )
    pipeline = Pipeline(service_env, tmp_path)
    bot_ws = ServiceProcess(
        "cdb.bot_ws",
        {
            **service_env,
            **SIM_CLOCK,
            "MEXC_WS_URL": f"ws://127.0.0.1:{sim_port}/edge",
            "MEXC_REST_URL": f"http://127.0.0.1:{sim_port}",
            "PUBLISH_INTERVAL_S": "1",
            "STALE_AFTER_S": "3600",
        },
        tmp_path,
    )
    try:
        pipeline.start()
        bot_ws.start().wait_healthy(60, ("ok", "stale"))
        await eventually_async(
            lambda: (scalar(service_env, "SELECT count(*) FROM positions") or 0) >= 1,
            timeout=120,
            what="a pump traded end to end",
        )
        symbol, pct, order_status, position_status = query(
            service_env,
            "SELECT s.symbol, s.pct_change, o.status, p.status FROM signals s"
            " JOIN orders o ON o.signal_id = s.signal_id"
            " JOIN positions p ON p.order_id = o.order_id LIMIT 1",
        )[0]
        assert pct >= 3.0 and order_status == "filled" and position_status in ("open", "closed")
        assert (
            scalar(service_env, "SELECT count(*) FROM risk_positions WHERE symbol = %s", (symbol,))
            == 1
        )
    finally:
        bot_ws.__exit__()
        pipeline.stop()
        sim.terminate()
        sim.wait(10)
