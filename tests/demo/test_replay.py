"""``cdb replay``: history files, determinism, the report, and the proof that replay and the
live services make the same orders from the same candles.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cdb.core.bus import Bus
from cdb.core.config import ServiceSettings
from cdb.core.events import Candle, Stream
from cdb.replay import (
    CandleGrid,
    HistoryError,
    Replay,
    ReplayConfig,
    ReplayResult,
    generate_candles,
    grid_of_candles,
    load_candles,
    load_history,
    save_candles,
)
from cdb.report.books import connect
from cdb.risk_manager.rules import RiskLimits
from cdb.signal_engine.strategy import StrategyParams
from tests.support import ServiceProcess, eventually_async


def test_history_round_trips_through_csv_and_parquet(tmp_path: Path) -> None:
    candles = generate_candles(symbols=3, minutes=20, seed=4)
    assert candles == generate_candles(symbols=3, minutes=20, seed=4)  # seeded: same market
    for name in ("k.csv", "k.parquet"):
        back = load_candles(save_candles(candles, tmp_path / name))
        assert [(c.symbol, c.open_time) for c in back] == [(c.symbol, c.open_time) for c in candles]
        assert all(math.isclose(a.close, b.close) for a, b in zip(back, candles, strict=True))


def test_history_errors_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("time,open,close,high,low,vol\n1767225600,1,1,1,1,5\n")
    with pytest.raises(HistoryError, match="missing column\\(s\\) amount"):
        load_candles(bad, "BTC_USDT")
    one = tmp_path / "one.csv"
    one.write_text(
        "time,open,close,high,low,vol,amount\n"
        "1767225600,100,101,102,99,5,500\n"
        "1767225660,101,-3,102,99,5,500\n"
    )
    with pytest.raises(HistoryError, match="no 'symbol' column"):
        load_candles(one)
    with pytest.raises(HistoryError, match="row 3 \\(BTC_USDT\\)"):
        load_candles(one, "BTC_USDT")


def test_history_loads_as_columns_and_errors_name_the_row(tmp_path: Path) -> None:
    candles = generate_candles(symbols=3, minutes=20, seed=4)
    for name in ("k.csv", "k.parquet"):
        grid = load_history(save_candles(candles, tmp_path / name))
        assert isinstance(grid, CandleGrid)
        assert grid.to_candles() == load_candles(tmp_path / name)
    one = tmp_path / "one.parquet"
    save_candles(candles[:4], one)
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(one)
    closes = table.column("close").to_pylist()
    closes[2] = -1.0
    pq.write_table(table.set_column(table.schema.get_field_index("close"), "close",
                                    pa.array(closes)), one)  # fmt: skip
    with pytest.raises(HistoryError, match=f"row 4 \\({candles[2].symbol}\\)"):
        load_history(one)
    with pytest.raises(HistoryError, match="no such file"):
        load_history(tmp_path / "nope.parquet")
    # two candles of one symbol in one minute do not fit a grid: candles, minute path
    twice = tmp_path / "twice.csv"
    save_candles([*candles, candles[0]], twice)
    history = load_history(twice)
    assert isinstance(history, list) and len(history) == len(candles) + 1


def test_convert_writes_a_parquet_the_replay_reads(tmp_path: Path) -> None:
    from cdb.cli import app

    candles = generate_candles(symbols=3, minutes=30, seed=2)
    csv = save_candles(candles, tmp_path / "old.csv")
    out = tmp_path / "new.parquet"
    result = CliRunner().invoke(
        app, ["replay", "--candles", str(csv), "--save", str(out), "--convert"]
    )
    assert result.exit_code == 0, result.output
    assert "replayed" not in result.output  # converted only
    assert load_candles(out) == load_candles(csv)
    refused = CliRunner().invoke(app, ["replay", "--candles", str(csv), "--convert"])
    assert refused.exit_code == 2 and "--convert needs --save" in refused.output


def assert_same_outcome(minutes: ReplayResult, grid: ReplayResult) -> None:
    """The grid path made exactly the minute path's trades (and published the same movers)."""
    assert grid.signals == minutes.signals
    assert grid.orders == minutes.orders
    assert grid.results == minutes.results
    assert grid.rejections == minutes.rejections
    assert grid.books == minutes.books
    assert (grid.candles, grid.minutes, grid.movers) == (
        minutes.candles,
        minutes.minutes,
        minutes.movers,
    )
    fed = {(md.symbol, md.timestamp) for md in grid.market_data}
    assert [md for md in minutes.market_data if (md.symbol, md.timestamp) in fed] == (
        grid.market_data
    )


@pytest.fixture(scope="module")
def day_part() -> list[Candle]:
    return generate_candles(symbols=12, minutes=300, seed=3)


CONFIGS = {
    "services' defaults": ReplayConfig(),
    "no breaker": ReplayConfig(limits=RiskLimits(max_daily_loss_pct=100.0)),
    "shorts, no cooldown, tight stop": ReplayConfig(
        strategy=StrategyParams(allow_short=True, cooldown_s=0.0),
        limits=RiskLimits(stop_loss_pct=0.5, max_daily_loss_pct=100.0),
    ),
    "low bar, top 3": ReplayConfig(
        strategy=StrategyParams(threshold_pct=0.5, min_volume=1_000, lookback_min=5),
        limits=RiskLimits(max_exposure_pct=80.0),
        top_n=3,
    ),
}


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_grid_path_makes_the_minute_paths_trades(
    day_part: list[Candle], config: ReplayConfig
) -> None:
    minutes = Replay(config).run_minutes(day_part)
    grid = grid_of_candles(day_part)
    assert grid is not None
    fast = Replay(config).run_grid(grid)
    assert minutes.orders and any(r.status == "closed" for r in minutes.results)
    assert_same_outcome(minutes, fast)
    assert len(fast.market_data) < fast.movers  # it skipped the movers that cannot matter
    assert Replay(config).run(day_part).orders == minutes.orders  # run takes the grid path


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    seed=st.integers(0, 2**32 - 1),
    hole_share=st.sampled_from([0.0, 0.02, 0.2]),
    config=st.sampled_from(list(CONFIGS.values())),
)
def test_grid_path_equals_minute_path_with_missing_candles_and_minutes(
    day_part: list[Candle], seed: int, hole_share: float, config: ReplayConfig
) -> None:
    rng = np.random.default_rng(seed)
    times = sorted({c.open_time for c in day_part})
    gone_minutes = set(rng.choice(times, size=3, replace=False).tolist())
    late = {day_part[0].symbol: times[40]}  # a listing, and a delisting
    early = {day_part[-1].symbol: times[-60]}
    kept = [
        c
        for c in day_part
        if c.open_time not in gone_minutes
        and rng.random() >= hole_share
        and c.open_time >= late.get(c.symbol, 0)
        and c.open_time <= early.get(c.symbol, times[-1])
    ]
    grid = grid_of_candles(kept)
    assert grid is not None
    assert_same_outcome(Replay(config).run_minutes(kept), Replay(config).run_grid(grid))


def test_candles_that_fit_no_grid_take_the_minute_path(day_part: list[Candle]) -> None:
    doubled = [*day_part, day_part[5]]
    assert grid_of_candles(doubled) is None
    assert Replay().run(doubled).orders == Replay().run_minutes(doubled).orders
    odd = [c.model_copy(update={"open_time": c.open_time + 30}) if i == 7 else c
           for i, c in enumerate(day_part)]  # fmt: skip
    assert grid_of_candles(odd) is None


def test_replay_is_deterministic_and_trades() -> None:
    candles = generate_candles(symbols=10, minutes=120, seed=7)
    first = Replay().run(candles)
    second = Replay().run(reversed(candles))  # input order does not matter
    assert [o.order_id for o in first.orders] == [o.order_id for o in second.orders]
    assert first.signals and first.orders and first.results
    assert {r.status for r in first.results} == {"filled", "closed"}
    # every order is sized by the risk rules: 10 % of equity at decision time
    assert all(o.notional <= 0.1 * 10_000 + 1e-6 for o in first.orders)
    assert len(first.books.equity) == len(first.results)


def test_replay_command_writes_the_report(tmp_path: Path) -> None:
    from cdb.cli import app

    csv = tmp_path / "history.csv"
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        ["replay", "--symbols", "6", "--minutes", "90", "--save", str(csv), "--out", str(out),
         "--no-png"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    counts = re.search(r"(\d+) signals, (\d+) orders, (\d+) rejected", result.output)
    assert counts is not None and int(counts[2]) > 0 and csv.exists(), result.output
    page = (out / "report.html").read_text()
    assert "cdb replay" in page and "chart-equity" in page
    again = CliRunner().invoke(
        app, ["replay", "--candles", str(csv), "--out", str(tmp_path / "again"), "--no-png"]
    )
    assert again.exit_code == 0, again.output
    # the same candles from the file give the same figures
    assert counts[0] in again.output, again.output
    missing = CliRunner().invoke(app, ["replay", "--candles", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2 and "no such file" in missing.output


LIVE_STREAMS = (
    Stream.CANDLES,
    Stream.MARKET_DATA,
    Stream.SIGNALS,
    Stream.ORDERS,
    Stream.ORDER_RESULTS,
)
EXPECTED_GROUPS = {
    Stream.CANDLES: {"execution_service"},
    Stream.MARKET_DATA: {"signal_engine", "execution_service"},
    Stream.SIGNALS: {"risk_manager"},
    Stream.ORDERS: {"execution_service"},
    Stream.ORDER_RESULTS: {"risk_manager"},
}


async def groups(bus: Bus) -> dict[Stream, list[dict[str, Any]]]:
    found: dict[Stream, list[dict[str, Any]]] = {}
    for stream in LIVE_STREAMS:
        try:
            found[stream] = await bus.redis.xinfo_groups(stream.value)
        except Exception:
            found[stream] = []
    return found


def name(group: dict[str, Any]) -> str:
    value = group["name"]
    return value.decode() if isinstance(value, bytes) else str(value)


async def quiet(bus: Bus) -> bool:
    """Every group of every pipeline stream has read and acknowledged everything."""
    for infos in (await groups(bus)).values():
        for info in infos:
            if info["pending"] or info.get("lag"):
                return False
    return True


async def settled(bus: Bus) -> None:
    # quiet twice in a row: a handler publishes before it acknowledges, so a hop in
    # flight always shows as pending on one stream or lag on the next
    async def twice() -> bool:
        if not await quiet(bus):
            return False
        await asyncio.sleep(0.02)
        return await quiet(bus)

    await eventually_async(twice, "the pipeline to settle")


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_replay_and_live_services_make_the_same_orders(
    settings: ServiceSettings, service_env: dict[str, str], bus: Bus, tmp_path: Path
) -> None:
    # candles dated ahead of the wall clock: the live execution_service only stops out
    # positions on bars that end after the position opened (by its own clock)
    start = (int(time.time()) // 60 + 2 * 1440) * 60
    candles = generate_candles(symbols=8, minutes=75, seed=11, start_time=start)
    replay = Replay()

    processes = [
        ServiceProcess(module, service_env, tmp_path)
        for module in ("cdb.signal_engine", "cdb.risk_manager", "cdb.execution_service")
    ]
    try:
        for process in processes:
            process.start().wait_healthy()

        async def subscribed() -> bool:
            found = await groups(bus)
            return all(
                wanted <= {name(g) for g in found[stream]}
                for stream, wanted in EXPECTED_GROUPS.items()
            )

        await eventually_async(subscribed, "every live consumer group")
        by_minute: dict[int, list[Any]] = {}
        for candle in candles:
            by_minute.setdefault(candle.open_time, []).append(candle)
        for minute in sorted(by_minute):
            batch = sorted(by_minute[minute], key=lambda c: c.symbol)
            movers = replay.minute(batch)  # the replay side, and the movers it publishes
            for candle in batch:  # the live side: the same candles and movers, via the bus
                await bus.publish(candle)
            await settled(bus)
            for md in movers:
                await bus.publish(md)
            await settled(bus)

        conn = await connect(settings)
        try:
            cursor = await conn.execute(
                "SELECT order_id, symbol, side, quantity, status FROM orders ORDER BY order_id"
            )
            live_orders = await cursor.fetchall()
            cursor = await conn.execute("SELECT signal_id FROM signals ORDER BY signal_id")
            live_signals = [row[0] for row in await cursor.fetchall()]
            cursor = await conn.execute(
                "SELECT order_id FROM positions WHERE status = 'closed' ORDER BY order_id"
            )
            live_closed = [row[0] for row in await cursor.fetchall()]
            cursor = await conn.execute(
                "SELECT order_id, kind, price, fee, realized_pnl FROM fills ORDER BY order_id, kind"
            )
            live_fills = await cursor.fetchall()
        finally:
            await conn.close()
    finally:
        for process in processes:
            process.terminate()

    result = replay.result
    replayed = sorted((o.order_id, o.symbol, o.side, o.quantity) for o in result.orders)
    assert len(replayed) >= 3, "the scenario must trade to prove anything"
    assert live_signals == sorted(s.signal_id for s in result.signals)
    assert [row[:3] for row in live_orders] == [row[:3] for row in replayed]
    replay_fills = sorted(
        (f.order_id, f.kind, f.price, f.fee, f.realized_pnl) for f in result.books.fills
    )
    # every fill at the same price with the same fee and PnL: a difference here is the
    # first place live and replay part (a later order is sized from the equity they make)
    assert [row[:2] for row in live_fills] == [row[:2] for row in replay_fills]
    for live_fill, replay_fill in zip(live_fills, replay_fills, strict=True):
        assert all(
            math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
            for a, b in zip(live_fill[2:], replay_fill[2:], strict=True)
        ), (live_fill, replay_fill)
    for (_, _, _, live_qty, status), (_, _, _, replay_qty) in zip(
        live_orders, replayed, strict=True
    ):
        assert status == "filled"
        assert math.isclose(live_qty, replay_qty, rel_tol=1e-9), (live_qty, replay_qty)
    replay_closed = sorted(r.order_id for r in result.results if r.status == "closed")
    assert replay_closed, "stop-losses must close some positions (they change later sizes)"
    assert live_closed == replay_closed
