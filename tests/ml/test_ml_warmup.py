"""A fresh advisor warms a new symbol's window from bot_rest's klines and predicts at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from cdb.core.bus import Bus
from cdb.core.events import Candle, deterministic_id
from cdb.mexc_sim.app import running_simulator
from cdb.mexc_sim.config import SimConfig
from cdb.ml_advisor.features import WARMUP_BARS
from cdb.ml_advisor.model_store import save_artifact
from cdb.ml_advisor.synthetic import generate_history
from cdb.ml_advisor.training import TrainingConfig, train_model
from tests.support import ServiceProcess, sample_sum


async def test_first_candle_of_a_symbol_warms_its_window_from_bot_rest(
    service_env: dict[str, str], bus: Bus, tmp_path: Path
) -> None:
    model_dir = tmp_path / "models"
    trained = train_model(
        generate_history(symbols=4, minutes=1440, seed=3),
        TrainingConfig(seed=1, num_boost_round=30, folds=2),
        version="warm-1",
    )
    save_artifact(model_dir, trained.manifest, trained.booster)
    config = SimConfig(port=0, symbols=3, seed=5, history_min=WARMUP_BARS + 30)
    async with running_simulator(config) as sim:
        rest = ServiceProcess("cdb.bot_rest", {**service_env, "MEXC_REST_URL": sim.rest_url},
                              tmp_path)  # fmt: skip
        with rest:
            rest.wait_healthy(accept=("ok", "stale"))
            env = {**service_env, "ML_MODEL_DIR": str(model_dir), "BOT_REST_URL": rest.url}
            with ServiceProcess("cdb.ml_advisor", env, tmp_path) as advisor:
                advisor.wait_healthy(accept=("ok", "stale"))
                symbol = sim.sim.market.contracts[0].symbol
                # the simulator serves from this event loop: every request here is async
                client = httpx.AsyncClient(timeout=10)
                reply = await client.get(
                    f"{rest.url}/klines/{symbol}", params={"start": int(time.time()) - 600}
                )
                klines = reply.json()
                bar = klines["bars"][-2]  # a closed minute
                open_ = bar["realOpen"]
                await bus.publish(Candle(
                    event_id=deterministic_id("candle", symbol, bar["time"]), symbol=symbol,
                    open_time=bar["time"], open=open_,
                    high=max(bar["realHigh"], open_), low=min(bar["realLow"], open_),
                    close=bar["realClose"], volume=bar["vol"], turnover=bar["amount"],
                ))  # fmt: skip
                status: dict[str, Any] = {}
                for _ in range(300):
                    status = (await client.get(f"{advisor.url}/status")).json()
                    if status.get("candles", {}).get("appended") or status.get("candles", {}).get(
                        "replaced"
                    ):
                        break
                    await asyncio.sleep(0.1)
                text = (await client.get(f"{advisor.url}/metrics")).text
                await client.aclose()
    candles = status["candles"]
    assert candles["warmed_from_rest"] >= WARMUP_BARS - 1, candles
    assert "warming_up" not in candles, candles
    # the live candle was judged by the model at once (published or suppressed by the gate)
    judged = (
        sample_sum(text, "ml_inference_seconds_count")
        + sample_sum(text, "ml_signals_suppressed_total", reason="outlier")
        + sample_sum(text, "ml_signals_suppressed_total", reason="out_of_range")
    )
    assert judged == 1.0, text
