"""ml_advisor: inference latency per candle, training and evaluation time, and the real
process's candle throughput (bus → features → XGBoost → gate → TreeSHAP for a signal →
PostgreSQL upsert).

Per-candle latency times :class:`~cdb.ml_advisor.decision.Decider`, the advisor's whole
per-candle computation, quiet and with every core busy, alternating in the same run.

The issue asks for inference "well under 10 ms"; these are the figures. Data: the seeded
synthetic history (``cdb ml synth``), 8 symbols x 4 days for training.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cdb.core.bus import Bus, connect_redis
from cdb.core.config import RedisSettings
from cdb.core.events import Candle, Stream
from cdb.localstack import LocalStack
from cdb.ml_advisor.decision import Decider
from cdb.ml_advisor.evaluation import EvaluationConfig, evaluate
from cdb.ml_advisor.features import WARMUP_BARS
from cdb.ml_advisor.inference import Predictor
from cdb.ml_advisor.live_state import CandleWindow
from cdb.ml_advisor.model_store import load_model, save_artifact
from cdb.ml_advisor.settings import MlAdvisorSettings
from cdb.ml_advisor.synthetic import generate_history
from cdb.ml_advisor.training import TrainingConfig, train_model
from cdb.signal_engine.strategy import CooldownState, MomentumStrategy, StrategyParams

ROOT = Path(__file__).resolve().parent.parent
LATENCY_SAMPLES = 3_000
REPEATS = 3
SETTING_DEFAULTS = MlAdvisorSettings.model_fields
E2E_SYMBOLS = 20
E2E_MINUTES = 180


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def candles(history: Any) -> list[Candle]:
    return [
        Candle(
            symbol=str(r.symbol),
            open_time=int(r.time),
            open=float(r.open),
            high=float(r.high),
            low=float(r.low),
            close=float(r.close),
            volume=float(r.vol),
            turnover=float(r.amount),
        )
        for r in history.itertuples(index=False)
    ]


def latency_bars() -> list[Candle]:
    return candles(generate_history(symbols=1, minutes=WARMUP_BARS + LATENCY_SAMPLES, seed=99))


def decider_for(predictor: Predictor) -> Decider:
    """The advisor's per-candle decision with the service's default settings."""
    return Decider(
        predictor,
        outlier_span=SETTING_DEFAULTS["ml_outlier_span"].default,
        top_features=SETTING_DEFAULTS["ml_top_features"].default,
    )


@dataclass
class Timings:
    """One pass over the latency candles, in seconds."""

    wall: list[float] = field(default_factory=list)  # per candle
    signalled: list[float] = field(default_factory=list)  # the candles that became a signal
    cpu: list[float] = field(default_factory=list)  # per candle, this thread's CPU time
    load: float = 0.0  # 1-minute load average: at a quiet run's start, a busy run's end


def inference_latency(decider: Decider, bars: list[Candle]) -> Timings:
    """Per candle, what the service computes for it: window update + the decision
    (features, sanity checks, prediction, gate; TreeSHAP and the signal for a prediction
    that passes). Wall-clock time per candle, and the CPU time it took of that."""
    threshold = SETTING_DEFAULTS["shadow_confidence_threshold"].default
    window = CandleWindow()
    timings = Timings(load=os.getloadavg()[0])
    for candle in bars:
        cpu_started = time.thread_time()
        started = time.perf_counter()
        window.add(candle)
        if not window.ready:
            continue
        decision = decider.decide(candle, window, 0.0, threshold=threshold, enabled=True)
        done = time.perf_counter()
        timings.cpu.append(time.thread_time() - cpu_started)
        timings.wall.append(done - started)
        if decision.signal is not None:
            timings.signalled.append(done - started)
    return timings


def explain_latency(predictor: Predictor, bars: list[Candle]) -> list[float]:
    """Prediction + TreeSHAP for every candle's row: what each candle would cost if every
    prediction were explained (the advisor explains only those that pass the gate)."""
    window = CandleWindow()
    samples: list[float] = []
    for candle in bars:
        window.add(candle)
        if not window.ready:
            continue
        row = window.features(0.0)
        started = time.perf_counter()
        predictor.explain(row)
        samples.append(time.perf_counter() - started)
    return samples


BUSY_SPIN = "import time\nend = time.monotonic() + 600\nwhile time.monotonic() < end: pass\n"


def busy_latency(decider: Decider, bars: list[Candle]) -> Timings:
    """Per-candle latency while every core also runs a busy process (the other services
    at full tilt), and the 1-minute load average at its end: with the tree library's
    threads pinned to one, the advisor competes for one core's share instead of
    oversubscribing all of them."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", BUSY_SPIN]) for _ in range(os.cpu_count() or 1)
    ]
    try:
        time.sleep(0.5)
        timings = inference_latency(decider, bars)
        timings.load = os.getloadavg()[0]
        return timings
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


async def process_throughput(stack: LocalStack, model_dir: Path) -> dict[str, float]:
    env = stack.env()
    settings = RedisSettings(
        redis_host=env["REDIS_HOST"],
        redis_port=int(env["REDIS_PORT"]),
        redis_password=env["REDIS_PASSWORD"],  # type: ignore[arg-type]
    )
    bus = Bus(connect_redis(settings))
    for stream in (Stream.CANDLES, Stream.ML_SIGNALS):
        await bus.redis.delete(stream.value)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (model_dir / "ml_advisor.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cdb.ml_advisor"],
        env={
            **os.environ,
            **env,
            "HTTP_PORT": str(port),
            "HTTP_HOST": "127.0.0.1",
            "ML_MODEL_DIR": str(model_dir),
            "LOG_LEVEL": "WARNING",
        },
        cwd=ROOT,
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            for _ in range(300):
                try:
                    if (await client.get(f"{url}/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            history = generate_history(
                symbols=E2E_SYMBOLS, minutes=E2E_MINUTES, seed=5, start=1_740_000_000
            )
            events = candles(history.sort_values(["time", "symbol"]))
            started = time.perf_counter()
            for event in events:
                await bus.publish(event)
            while True:
                status = (await client.get(f"{url}/status")).json()
                counts = status["candles"]
                if sum(counts.get(k, 0) for k in ("appended", "replaced", "stale")) >= len(events):
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            metrics = (await client.get(f"{url}/metrics")).text
    finally:
        proc.terminate()
        proc.wait(30)
        await bus.close()
    total = count = 0.0
    for line in metrics.splitlines():
        if line.startswith("ml_inference_seconds_sum"):
            total = float(line.split()[-1])
        if line.startswith("ml_inference_seconds_count"):
            count = float(line.split()[-1])
    return {
        "candles": float(len(events)),
        "seconds": elapsed,
        "rate": len(events) / elapsed,
        "inference_mean_ms": 1000 * total / count if count else float("nan"),
    }


def run(stack: LocalStack) -> list[dict[str, Any]]:
    history = generate_history(symbols=8, minutes=4 * 1440, seed=7)
    cut = int(history["time"].min()) + 3 * 86400
    train_part = history[history["time"] < cut].reset_index(drop=True)
    started = time.perf_counter()
    result = train_model(train_part, TrainingConfig())
    train_s = time.perf_counter() - started
    rows: list[dict[str, Any]] = [
        {
            "name": "train (8 symbols x 3 days, 4 folds + final, 200 rounds)",
            "value": train_s,
            "unit": "s",
            "note": f"{result.manifest.training_rows:,} rows, 1 thread; "
            f"walk-forward AUC {result.manifest.metrics.mean_auc:.3f}",
        }
    ]
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = Path(scratch)
        save_artifact(model_dir, result.manifest, result.booster)
        predictor = Predictor(load_model(model_dir))
        decider = decider_for(predictor)
        bars = latency_bars()
        # Quiet and busy alternate in the same run, REPEATS times each: min and median.
        quiet: list[Timings] = []
        busy: list[Timings] = []
        for _ in range(REPEATS):
            quiet.append(inference_latency(decider, bars))
            busy.append(busy_latency(decider, bars))
        rows += latency_rows(quiet, busy)
        explain_only = explain_latency(predictor, bars)
        rows += [
            {
                "name": "predict + SHAP for every candle's row p50",
                "value": 1000 * statistics.median(explain_only),
                "unit": "ms",
                "note": f"{len(explain_only):,} rows; the advisor explains only those "
                "that pass the gate",
            },
            {
                "name": "predict + SHAP for every candle's row p99",
                "value": 1000 * percentile(explain_only, 0.99),
                "unit": "ms",
                "note": "",
            },
        ]
        started = time.perf_counter()
        evaluation = evaluate(
            history,
            predictor,
            _momentum_rule(),
            rule_name="momentum",
            config=EvaluationConfig(),
            since=cut,
        )
        rows.append(
            {
                "name": "evaluate (8 symbols x 1 day replay)",
                "value": time.perf_counter() - started,
                "unit": "s",
                "note": f"{evaluation.bars:,} bars",
            }
        )
        e2e = asyncio.run(process_throughput(stack, model_dir))
    rows += [
        {
            "name": "ml_advisor process: candles handled per second",
            "value": e2e["rate"],
            "unit": "candles/s",
            "note": f"{int(e2e['candles']):,} candles of {E2E_SYMBOLS} symbols, "
            "bus + PostgreSQL upsert + inference",
        },
        {
            "name": "ml_advisor process: ml_inference_seconds mean",
            "value": e2e["inference_mean_ms"],
            "unit": "ms",
            "note": "from its /metrics",
        },
    ]
    return rows


def latency_rows(quiet: list[Timings], busy: list[Timings]) -> list[dict[str, Any]]:
    """p50 and p99 per candle quiet, p50 and p99 of the candles that became a signal, and
    p99 with every core busy, wall clock and CPU: each the min over the repeats, with the
    median and the 1-minute load averages in the note."""

    def row(name: str, runs: list[list[float]], q: float, loads: list[float]) -> dict[str, Any]:
        values = [1000 * percentile(samples, q) for samples in runs]
        return {
            "name": name,
            "value": min(values),
            "unit": "ms",
            "note": f"{len(runs[0]):,} candles; median {statistics.median(values):.2f} of "
            f"{len(values)} runs; load " + " ".join(f"{load:.2f}" for load in loads),
        }

    quiet_loads = [t.load for t in quiet]
    busy_loads = [t.load for t in busy]
    rows: list[dict[str, Any]] = []
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        rows.append(row(f"per candle: window + decision {label}", [t.wall for t in quiet], q,
                        quiet_loads))  # fmt: skip
    if all(t.signalled for t in quiet):
        for label, q in (("p50", 0.5), ("p99", 0.99)):
            rows.append(row(f"candles that became a signal (with TreeSHAP) {label}",
                            [t.signalled for t in quiet], q, quiet_loads))  # fmt: skip
    wall = row("per candle p99 with every core busy", [t.wall for t in busy], 0.99, busy_loads)
    preempted = statistics.median(sum(w > 0.002 for w in t.wall) / len(t.wall) for t in busy)
    wall["note"] = (
        f"target 5 ms, ratio {wall['value'] / 5:.2f}; {wall['note']}; "
        f"{os.cpu_count()} busy processes; median {preempted:.1%} of candles over 2 ms"
    )
    wall |= {"goal": "5", "target": 5.0, "better": "lower"}
    cpu = row("per candle CPU p99 with every core busy", [t.cpu for t in busy], 0.99, busy_loads)
    cpu["note"] += "; the work itself (thread CPU time): the wall-clock p99 less this is "
    cpu["note"] += "waiting for a core"
    return [*rows, wall, cpu]


def _momentum_rule() -> Any:
    """signal_engine's own rule, as ``cdb ml evaluate`` uses it."""
    strategy = MomentumStrategy(StrategyParams())
    state = CooldownState()
    return lambda event: strategy.on_market_data(event, state)
