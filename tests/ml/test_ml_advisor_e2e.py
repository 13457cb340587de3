"""ml_advisor as a real process on real Redis and PostgreSQL, beside a real risk_manager.

Candles and movers go in on the bus; explained shadow signals come out, the risk manager
persists them in ``ml_signals`` and never turns one into an order; a control event switches
shadow mode off live; malformed entries are dead-lettered while the advisor keeps working;
a restarted advisor resumes warm (windows from the ``candles`` table, control replayed); a
candle whose write PostgreSQL refuses is handled again, stored, and republishes its signal.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest

from cdb.core.bus import Bus
from cdb.core.events import Candle, Control, ControlSettings, MarketData, MlSignal, Stream
from cdb.ml_advisor.dataset import build_dataset
from cdb.ml_advisor.features import FEATURES, WARMUP_BARS
from cdb.ml_advisor.inference import Predictor
from cdb.ml_advisor.model_store import load_model, save_artifact
from cdb.ml_advisor.synthetic import generate_history
from cdb.ml_advisor.training import TrainingConfig, train_model
from tests.support import ServiceProcess, eventually_async, sample_sum

SYMBOLS = 4
PHASE_ONE = 170  # minutes with shadow mode on
PHASE_TWO = 30  # minutes after the control event switched it off
LIVE_START = 1_736_000_040


def candle_of(row: pd.Series) -> Candle:  # type: ignore[type-arg]
    return Candle(
        symbol=str(row["symbol"]),
        open_time=int(row["time"]),
        open=float(row["open"]),
        high=float(row["high"]),
        low=float(row["low"]),
        close=float(row["close"]),
        volume=float(row["vol"]),
        turnover=float(row["amount"]),
    )


async def publish_minutes(bus: Bus, history: pd.DataFrame, dataset: pd.DataFrame) -> int:
    """Per minute: the screener's movers of that window, then the closed candles."""
    movers = dataset[dataset["mover_rank"] != 0]
    count = 0
    for at, bars in history.groupby("time", sort=True):
        for _, mover in movers[movers["time"] == at].iterrows():
            await bus.publish(
                MarketData(
                    symbol=str(mover["symbol"]),
                    price=float(mover["close"]),
                    volume=float(mover["window_turnover"]),
                    pct_change=float(mover["ret_15m"]),
                    timestamp=int(at) + 60,
                )
            )
        for _, row in bars.iterrows():
            await bus.publish(candle_of(row))
            count += 1
    return count


def handled(advisor: ServiceProcess) -> int:
    return sum(advisor.status()["candles"].get(k, 0) for k in ("appended", "replaced", "stale"))


async def stream_events(bus: Bus, stream: Stream) -> list[bytes]:
    entries: Any = await bus.redis.xrange(stream.value)
    return [fields[b"event"] for _, fields in entries if b"event" in fields]


async def test_shadow_signals_are_persisted_and_never_traded(
    service_env: dict[str, str], bus: Bus, tmp_path: Path
) -> None:
    model_dir = tmp_path / "models"
    trained = train_model(
        generate_history(symbols=SYMBOLS, minutes=1440, seed=11),
        TrainingConfig(seed=1, num_boost_round=60, folds=2),
        version="e2e-1",
    )
    save_artifact(model_dir, trained.manifest, trained.booster)

    history = generate_history(
        symbols=SYMBOLS, minutes=PHASE_ONE + PHASE_TWO + 1, seed=23, start=LIVE_START
    )
    dataset = build_dataset(history)
    one_end = LIVE_START + 60 * PHASE_ONE
    # A threshold the model clears on a tenth of the phase-one bars (offline check).
    offline = Predictor(load_model(model_dir)).confidences(
        dataset[dataset["time"] < one_end][list(FEATURES)].to_numpy(np.float64)
    )
    threshold = float(np.quantile(offline, 0.9))
    assert (offline > threshold).sum() >= 5

    env = {
        **service_env,
        "ML_MODEL_DIR": str(model_dir),
        "SHADOW_CONFIDENCE_THRESHOLD": f"{threshold:.6f}",
        "ML_DRIFT_INTERVAL_S": "0.3",
        "ML_DRIFT_MIN_ROWS": "20",
        "BUS_BLOCK_MS": "200",
    }
    risk = ServiceProcess("cdb.risk_manager", service_env, tmp_path).start()
    advisor = ServiceProcess("cdb.ml_advisor", env, tmp_path).start()
    try:
        advisor.wait_healthy(60)
        risk.wait_healthy(60)
        status = advisor.status()
        assert status["model"]["version"] == "e2e-1"
        assert status["model"]["training_data_hash"] == trained.manifest.training_data_hash
        assert status["shadow"] == {
            "enabled": True,
            "confidence_threshold": pytest.approx(threshold),
            "control_generation": -1,
            "trades": False,
        }

        # Phase one: shadow mode on.
        phase_one = history[history["time"] < one_end]
        sent = await publish_minutes(bus, phase_one, dataset)
        await eventually_async(lambda: handled(advisor) == sent, "phase one candles handled")
        raw_signals = await stream_events(bus, Stream.ML_SIGNALS)
        signals = [MlSignal.model_validate_json(raw) for raw in raw_signals]
        assert signals, advisor.log()
        for signal in signals:
            assert signal.model_version == "e2e-1" and signal.model == "xgboost-momentum"
            assert signal.confidence > threshold - 1e-6
            assert len(signal.top_features) == 5
            assert {f.feature for f in signal.top_features} <= set(FEATURES)
            assert signal.timestamp >= LIVE_START + 60 * WARMUP_BARS
        published = len(signals)
        status = advisor.status()
        assert status["signals_published"] == published
        assert status["signals_suppressed"]["below_threshold"] > 0

        def persisted() -> int:
            with psycopg.connect(**_conninfo(service_env)) as conn:
                return int(conn.execute("SELECT count(*) FROM ml_signals").fetchone()[0])

        await eventually_async(
            lambda: persisted() == published, "risk_manager persisting ml_signals"
        )

        # Phase two: the operator switches shadow mode off, live.
        await bus.publish(
            Control(
                bot="mexc-momentum",
                generation=2,
                config_hash="off",
                settings=ControlSettings(shadow_enabled=False),
                timestamp=time.time(),
            )
        )
        await eventually_async(
            lambda: advisor.status()["shadow"]["enabled"] is False, "control applied"
        )
        sent += await publish_minutes(bus, history[history["time"] >= one_end], dataset)
        await eventually_async(lambda: handled(advisor) == sent, "phase two candles handled")
        assert len(await stream_events(bus, Stream.ML_SIGNALS)) == published
        assert advisor.status()["signals_suppressed"]["disabled"] >= SYMBOLS * PHASE_TWO

        # Malformed input: dead-lettered with the reason, the advisor carries on.
        good = candle_of(history.iloc[-1]).model_dump()
        garbage: list[dict[bytes, bytes]] = [
            {b"not_event": b"x"},
            {b"event": b"{not json"},
            {
                b"event": Candle(**{**good, "event_id": "bad-1"}).model_dump_json()[:-1].encode()
                + b',"extra":1}'
            },
            {
                b"event": Candle.model_construct(**{**good, "event_id": "bad-2", "high": 0.5})
                .model_dump_json()
                .encode()
            },
            {
                b"event": Candle.model_construct(**{**good, "event_id": "bad-3", "close": -1.0})
                .model_dump_json()
                .encode()
            },
            {b"event": b'{"type":"candle","symbol":"A_USDT","open_time":"soon"}'},
        ]
        for fields in garbage:
            await bus.redis.xadd(Stream.CANDLES.value, fields)  # type: ignore[arg-type]
        await bus.redis.xadd(Stream.MARKET_DATA.value, {b"event": b"[]"})
        await bus.redis.xadd(Stream.CONTROL.value, {b"event": b'{"type":"control"}'})
        late = candle_of(history.iloc[-1]).model_copy(
            update={"event_id": "late-good", "open_time": int(history["time"].max()) + 60}
        )
        await bus.publish(late)
        sent += 1
        await eventually_async(lambda: handled(advisor) == sent, "a good candle after the garbage")

        async def dead_letters() -> list[dict[bytes, bytes]]:
            entries: Any = await bus.redis.xrange(Stream.DEAD_LETTER.value)
            return [fields for _, fields in entries]

        letters = await eventually_async(
            lambda: _at_least(dead_letters(), len(garbage) + 2), "dead letters", timeout=30
        )
        candle_letters = [f for f in letters if f[b"stream"] == Stream.CANDLES.value.encode()]
        assert len(candle_letters) == len(garbage)
        reasons = b" | ".join(f[b"reason"] for f in candle_letters).decode()
        assert "no 'event' field" in reasons and "high 0.5 < low" in reasons
        assert "malformed event" in reasons
        assert advisor.wait_healthy(5) == {"status": "ok"}

        # Never traded; the candles are kept; the comparison view sees the outcomes.
        assert await bus.redis.xlen(Stream.ORDERS.value) == 0
        with psycopg.connect(**_conninfo(service_env)) as conn:
            assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM candles").fetchone()[0] == sent
            rows = conn.execute(
                "SELECT signal_id, exit_price, hit_15m FROM ml_shadow_comparison"
                " WHERE source = 'ml'"
            ).fetchall()
        assert {r[0] for r in rows} == {s.signal_id for s in signals}
        by_id = {s.signal_id: s for s in signals}
        closes = history.set_index(["symbol", "time"])["close"]
        checked = 0
        for signal_id, exit_price, hit in rows:
            signal = by_id[signal_id]
            exit_key = (signal.symbol, int(signal.timestamp) - 60 + 15 * 60)
            if exit_key in closes.index:
                assert exit_price == pytest.approx(closes[exit_key])
                assert hit == (closes[exit_key] > signal.price)
                checked += 1
        assert checked > 0, "no ML signal's 15-minute outcome was in the history"

        metrics_text = _metrics(advisor)
        assert sample_sum(metrics_text, "ml_signals_published_total") == published
        assert sample_sum(metrics_text, "ml_inference_seconds_count") > 0
        assert 'ml_feature_drift{feature="ret_15m"}' in metrics_text
        assert set(advisor.status()["feature_drift_psi"]) == set(FEATURES)

        # Restart: warm windows from the candles table, shadow mode still off.
        assert advisor.terminate() == 0
        advisor = ServiceProcess("cdb.ml_advisor", env, tmp_path).start()
        advisor.wait_healthy(60)
        status = advisor.status()
        assert status["ready_symbols"] == SYMBOLS
        assert status["shadow"]["enabled"] is False
        assert status["shadow"]["control_generation"] == 2
    finally:
        advisor.terminate()
        risk.terminate()


async def _at_least(pending: Any, count: int) -> Any:
    letters = await pending
    return letters if len(letters) >= count else None


def _conninfo(env: dict[str, str]) -> dict[str, Any]:
    return {
        "host": env["POSTGRES_HOST"],
        "port": int(env["POSTGRES_PORT"]),
        "dbname": env["POSTGRES_DB"],
        "user": env["POSTGRES_USER"],
    }


def _metrics(process: ServiceProcess) -> str:
    import httpx

    return httpx.get(f"{process.url}/metrics", timeout=5).text


async def test_without_a_model_it_stores_candles_and_picks_up_the_first_trained_one(
    service_env: dict[str, str], bus: Bus, tmp_path: Path
) -> None:
    model_dir = tmp_path / "models"
    env = {**service_env, "ML_MODEL_DIR": str(model_dir), "ML_MODEL_RELOAD_S": "0.3"}
    history = generate_history(symbols=2, minutes=WARMUP_BARS + 5, seed=3, start=LIVE_START)
    with ServiceProcess("cdb.ml_advisor", env, tmp_path) as advisor:
        advisor.wait_healthy(60)
        status = advisor.status()
        assert status["model"] is None and "no trained model" in status["model_error"]
        for _, row in history.iterrows():
            await bus.publish(candle_of(row))
        await eventually_async(lambda: handled(advisor) == len(history), "candles handled")
        assert advisor.status()["signals_suppressed"] == {"no_model": 2 * 6}
        with psycopg.connect(**_conninfo(service_env)) as conn:
            assert conn.execute("SELECT count(*) FROM candles").fetchone()[0] == len(history)

        trained = train_model(
            generate_history(symbols=2, minutes=720, seed=4),
            TrainingConfig(num_boost_round=10, folds=1),
            version="first",
        )
        save_artifact(model_dir, trained.manifest, trained.booster)
        await eventually_async(
            lambda: (advisor.status()["model"] or {}).get("version") == "first", "hot reload"
        )
        assert advisor.status()["model"]["pinned"] is False


async def test_a_failed_candle_write_is_retried_and_republishes_the_same_signal(
    service_env: dict[str, str], bus: Bus, tmp_path: Path
) -> None:
    """The signal goes out before the candle's row is written; the write still comes
    before the acknowledgement. PostgreSQL refuses one candle's first write (a trigger):
    the candle is handled again, stored, and its signal is the same event again."""
    model_dir = tmp_path / "models"
    trained = train_model(
        generate_history(symbols=2, minutes=720, seed=4),
        TrainingConfig(num_boost_round=10, folds=1),
        version="write-once",
    )
    save_artifact(model_dir, trained.manifest, trained.booster)
    history = generate_history(symbols=1, minutes=WARMUP_BARS + 3, seed=8, start=LIVE_START)
    refused_at = int(history["time"].iloc[-2])  # a ready window: it makes a signal
    env = {
        **service_env,
        "ML_MODEL_DIR": str(model_dir),
        "SHADOW_CONFIDENCE_THRESHOLD": "0",  # every prediction is a signal
        "ML_OUTLIER_SPAN": "1000",
        "BUS_BLOCK_MS": "200",
    }
    with ServiceProcess("cdb.ml_advisor", env, tmp_path) as advisor:
        advisor.wait_healthy(60)
        with psycopg.connect(**_conninfo(service_env), autocommit=True) as conn:
            conn.execute("CREATE SEQUENCE refuse_once")
            conn.execute(
                f"""
                CREATE FUNCTION refuse_once() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.open_time = to_timestamp({refused_at}) THEN
                        IF nextval('refuse_once') = 1 THEN
                            RAISE EXCEPTION 'candle write refused once';
                        END IF;
                    END IF;
                    RETURN NEW;
                END $$"""
            )
            conn.execute(
                "CREATE TRIGGER refuse_once BEFORE INSERT ON candles "
                "FOR EACH ROW EXECUTE FUNCTION refuse_once()"
            )
        for _, row in history.iterrows():
            await bus.publish(candle_of(row))
        await eventually_async(lambda: handled(advisor) == len(history), "candles handled")
        with psycopg.connect(**_conninfo(service_env)) as conn:
            assert conn.execute("SELECT count(*) FROM candles").fetchone()[0] == len(history)
            assert conn.execute("SELECT last_value FROM refuse_once").fetchone()[0] == 2
        signals = [
            MlSignal.model_validate_json(raw) for raw in await stream_events(bus, Stream.ML_SIGNALS)
        ]
        by_bar: dict[float, list[MlSignal]] = {}
        for signal in signals:
            by_bar.setdefault(signal.timestamp, []).append(signal)
        assert len(by_bar) == 4  # the four bars with a full window
        refused = by_bar.pop(float(refused_at + 60))
        assert len(refused) == 2 and refused[0] == refused[1]  # the same event, again
        assert all(len(copies) == 1 for copies in by_bar.values())
        assert sample_sum(_metrics(advisor), "cdb_handler_errors_total") == 1
