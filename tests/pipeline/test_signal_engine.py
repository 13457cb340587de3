"""The momentum rule (pure) and signal_engine as a process: validation, redelivery."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from cdb.core.bus import Bus
from cdb.core.events import Control, ControlSettings, Signal, Stream
from cdb.signal_engine.strategy import (
    CooldownState,
    MomentumStrategy,
    StrategyParams,
    Suppressed,
    signal_id_for,
)
from tests.support import (
    FAST_BUS,
    REDIS_PASSWORD,
    ROOT,
    ServiceProcess,
    eventually_async,
    group_caught_up,
    market,
    query,
    scalar,
)

T0 = 1_767_000_000


def evaluate(params: StrategyParams, pct: float, volume: float = 200_000.0) -> object:
    return MomentumStrategy(params).evaluate(
        market("X_USDT", pct, volume=volume, ts=T0), CooldownState()
    )


def test_the_seed_rule() -> None:
    default = StrategyParams()
    signal = evaluate(default, 4.5)
    assert not isinstance(signal, Suppressed)
    assert signal.side == "long" and signal.confidence == pytest.approx(0.45)  # type: ignore[attr-defined]
    assert evaluate(default, 3.0) is not None and not isinstance(evaluate(default, 3.0), Suppressed)
    assert evaluate(default, 2.99) == Suppressed("threshold")
    assert evaluate(default, 4.0, volume=99_999.0) == Suppressed("volume")
    assert evaluate(default, -8.0) == Suppressed("threshold")  # shorts are off by default
    short = evaluate(StrategyParams(allow_short=True), -8.0)
    assert not isinstance(short, Suppressed) and short.side == "short"  # type: ignore[attr-defined]
    capped = evaluate(default, 25.0)
    assert capped.confidence == 1.0  # type: ignore[attr-defined]
    assert evaluate(StrategyParams(paused=True), 9.0) == Suppressed("paused")
    assert evaluate(StrategyParams(lookback_min=5), 9.0) == Suppressed("lookback")


def test_one_move_is_one_signal_and_ids_are_deterministic() -> None:
    strategy = MomentumStrategy(StrategyParams(cooldown_s=900))
    state = CooldownState()
    first = strategy.on_market_data(market("M_USDT", 5.0, ts=T0), state)
    assert first is not None and first.signal_id == signal_id_for(
        market("M_USDT", 5, ts=T0), "long"
    )
    assert first.event_id == first.signal_id
    # the same window again (a redelivery) is the same signal, not a new one
    again = strategy.on_market_data(market("M_USDT", 5.0, ts=T0), state)
    assert again is not None and again.signal_id == first.signal_id
    assert strategy.on_market_data(market("M_USDT", 6.0, ts=T0 + 60), state) is None  # cooldown
    assert strategy.on_market_data(market("N_USDT", 6.0, ts=T0 + 60), state) is not None
    later = strategy.on_market_data(market("M_USDT", 6.0, ts=T0 + 900), state)
    assert later is not None and later.signal_id != first.signal_id


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SIGNAL_THRESHOLD_PCT", "0"),
        ("LOOKBACK_MIN", "0"),
        ("SIGNAL_MIN_VOLUME", "-1"),
        ("SIGNAL_THRESHOLD_PCT", "lots"),
    ],
)
def test_a_bad_setting_stops_the_service_with_one_line_naming_it(name: str, value: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "REDIS_PASSWORD": REDIS_PASSWORD, name: value}
    done = subprocess.run(
        [sys.executable, "-m", "cdb.signal_engine"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"config error: {name}="), done.stderr


async def test_a_redelivered_market_data_event_makes_no_second_signal(
    bus: Bus, service_env: dict[str, str], tmp_path: Path, redis_proc: object
) -> None:
    proc = ServiceProcess("cdb.signal_engine", {**service_env, **FAST_BUS}, tmp_path).start()
    try:
        proc.wait_healthy(60)
        md = market("RE_USDT", 5.0, ts=int(time.time()))
        await bus.publish(md)
        await bus.publish(md.model_copy(update={"event_id": "a-second-delivery"}))
        await bus.publish(md)  # the same event id again
        redis: Redis = bus.redis

        async def handled() -> bool:
            return await group_caught_up(redis, Stream.MARKET_DATA.value, "signal_engine")

        await eventually_async(handled, what="all three deliveries handled")
        assert scalar(service_env, "SELECT count(*) FROM signals") == 1
        signals = await redis.xrange(Stream.SIGNALS.value)
        ids = {e[1][b"event"] for e in signals}
        assert len(ids) == 1  # republished copies are byte-identical: one event id
        status = proc.status()
        assert status["in_force"]["threshold_pct"] == 3.0
        assert status["in_force"]["effective_cooldown_s"] == 900.0
        assert query(service_env, "SELECT symbol, side FROM signals") == [("RE_USDT", "long")]

        # A redelivery after the live config changed (threshold above the move, paused):
        # the stored signal is published again as it was, not evaluated anew and lost.
        await bus.publish(
            Control(
                bot="re",
                generation=1,
                config_hash="raised",
                settings=ControlSettings(signal_threshold_pct=50.0, paused=True),
                timestamp=time.time(),
            )
        )
        await eventually_async(
            lambda: proc.status()["in_force"]["threshold_pct"] == 50.0, what="control applied"
        )
        before = len(signals)
        await bus.publish(md.model_copy(update={"event_id": "after-the-control-change"}))
        await eventually_async(handled, what="the late redelivery handled")
        signals = await redis.xrange(Stream.SIGNALS.value)
        assert len(signals) == before + 1
        assert {e[1][b"event"] for e in signals} == ids  # the same signal, byte for byte
        assert scalar(service_env, "SELECT count(*) FROM signals") == 1
        # a new window of the same size is now suppressed by the new config
        await bus.publish(market("NEW_USDT", 5.0, ts=int(time.time())))
        await eventually_async(handled, what="a new event under the new config")
        assert len(await redis.xrange(Stream.SIGNALS.value)) == before + 1
    finally:
        proc.__exit__()


async def test_the_cooldown_is_read_from_the_stored_signals(
    bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    """A symbol's newest stored signal quiets it for the cooldown (900 s of market time
    by default): a second move inside it makes no signal, one after it does, and the
    stored rows and published events are those of the first and third move only."""
    proc = ServiceProcess("cdb.signal_engine", {**service_env, **FAST_BUS}, tmp_path).start()
    try:
        proc.wait_healthy(60)
        ts = int(time.time()) - 3600
        moves = [market("CD_USDT", 5.0, ts=ts + offset) for offset in (0, 600, 1200)]
        for md in moves:
            await bus.publish(md)
        redis: Redis = bus.redis

        async def handled() -> bool:
            return await group_caught_up(redis, Stream.MARKET_DATA.value, "signal_engine")

        await eventually_async(handled, what="the three moves handled")
        expected = [signal_id_for(moves[0], "long"), signal_id_for(moves[2], "long")]
        assert query(service_env, "SELECT signal_id FROM signals ORDER BY signal_ts") == [
            (sid,) for sid in expected
        ]
        published = [e[1][b"event"] for e in await redis.xrange(Stream.SIGNALS.value)]
        assert [Signal.model_validate_json(p).signal_id for p in published] == expected
    finally:
        proc.__exit__()
