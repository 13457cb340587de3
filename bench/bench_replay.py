"""Replay speed on one core, and the same strategy backtested by freqtrade on the same candles.

* cdb: ``cdb.replay.Replay`` (bot_ws window + signal_engine strategy + risk_manager rules +
  paper fills, the live code) over a day of Min1 candles from mexc_sim's market model;
* freqtrade: installed by this benchmark into its own venv (``<data>/freqtrade-venv``,
  never the project's), fed the same candles as JSON OHLCV files, with the same rule
  (15-minute % change >= 3 and 15-minute quote volume >= 100,000), 2 % stop, 10 % of
  equity per trade, at most 5 trades (50 %). freqtrade's exchange metadata (markets) is
  normally downloaded; here the pairs' market entries are given to ccxt so it runs
  offline. Timed: freqtrade's ``backtest_one_strategy`` (indicators + simulation), not
  its start-up or file loading; the cdb figure likewise excludes loading.

Both run pinned to one CPU. If freqtrade cannot be installed, the row says so (and a
line is printed): never a silent skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cdb.core.events import Candle
from cdb.localstack import LocalStack
from cdb.replay import Replay, generate_candles, load_candles, save_candles

FREQTRADE = "freqtrade==2026.9"
SYMBOLS = 20
MINUTES = 1440
SEED = 7
ROUNDS = 3

STRATEGY = '''
from pandas import DataFrame
from freqtrade.strategy import IStrategy


class CdbMomentum(IStrategy):
    """signal_engine's rule: 15-minute change >= 3 % with >= 100,000 USDT traded."""

    timeframe = "1m"
    minimal_roi = {"0": 100.0}  # no take-profit: cdb exits by its 2 % stop only
    stoploss = -0.02
    startup_candle_count = 15

    def populate_indicators(self, df: DataFrame, metadata: dict) -> DataFrame:
        first_open = df["open"].shift(14)
        df["pct"] = (df["close"] - first_open) / first_open * 100
        df["vol15"] = df["volume"].rolling(15).sum()  # volume column holds USDT turnover
        return df

    def populate_entry_trend(self, df: DataFrame, metadata: dict) -> DataFrame:
        df.loc[(df["pct"] >= 3.0) & (df["vol15"] >= 100000), "enter_long"] = 1
        return df

    def populate_exit_trend(self, df: DataFrame, metadata: dict) -> DataFrame:
        return df
'''

RUNNER = '''
"""freqtrade backtesting offline: the pairs' ccxt market entries are given, not fetched."""
import json, sys, time
from unittest.mock import patch

from freqtrade.exchange.exchange import Exchange
from freqtrade.optimize.backtesting import Backtesting

config_path, out_path = sys.argv[1], sys.argv[2]
pairs = json.load(open(config_path))["exchange"]["pair_whitelist"]


def market(pair):
    base, quote = pair.split("/")
    return {
        "id": base + quote, "symbol": pair, "base": base, "quote": quote, "baseId": base,
        "quoteId": quote, "active": True, "type": "spot", "spot": True, "margin": False,
        "swap": False, "future": False, "option": False, "contract": False,
        "precision": {"amount": 1e-8, "price": 1e-10},
        "limits": {"amount": {"min": None, "max": None}, "cost": {"min": None, "max": None},
                   "price": {"min": None, "max": None}, "leverage": {"min": None, "max": None}},
        "info": {},
    }


async def offline_markets(self, reload=False):
    self._api_async.set_markets([market(p) for p in pairs])


timings = {}
original = Backtesting.backtest_one_strategy


def timed(self, *args, **kwargs):
    began = time.perf_counter()
    try:
        return original(self, *args, **kwargs)
    finally:
        timings["backtest_s"] = time.perf_counter() - began


with patch.object(Exchange, "_api_reload_markets", offline_markets), patch.object(
    Backtesting, "backtest_one_strategy", timed
):
    from freqtrade.main import main

    try:
        main(["backtesting", "-c", config_path, "--export", "none"])
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise
json.dump(timings, open(out_path, "w"))
'''


@contextmanager
def one_core() -> Iterator[int]:
    """Pin this process to one CPU for the measurement."""
    before = os.sched_getaffinity(0)
    cpu = max(before)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)


def candles_for(data_dir: Path) -> list[Candle]:
    cache = data_dir / f"replay-candles-{SYMBOLS}x{MINUTES}-seed{SEED}.parquet"
    if cache.exists():
        return load_candles(cache)
    candles = generate_candles(symbols=SYMBOLS, minutes=MINUTES, seed=SEED)
    save_candles(candles, cache)
    return candles


def replay_rate(candles: list[Candle]) -> tuple[float, Replay]:
    best = float("inf")
    replay = Replay()
    with one_core():
        for _ in range(ROUNDS):
            replay = Replay()
            began = time.perf_counter()
            replay.run(candles)
            best = min(best, time.perf_counter() - began)
    return len(candles) / best, replay


def install_freqtrade(venv: Path) -> str | None:
    """``None`` when freqtrade runs from ``venv``, else why it cannot."""
    python = venv / "bin" / "python"
    if python.exists():
        check = subprocess.run(
            [str(python), "-c", "import freqtrade"], capture_output=True, text=True
        )
        if check.returncode == 0:
            return None
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", FREQTRADE],
            check=True,
            capture_output=True,
            text=True,
            timeout=900,
        )
    except subprocess.CalledProcessError as error:
        tail = (error.stderr or error.stdout or "").strip().splitlines()[-1:] or ["?"]
        return f"pip install {FREQTRADE} failed: {tail[0][:200]}"
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"pip install {FREQTRADE} failed: {error}"
    return None


def freqtrade_rate(candles: list[Candle], work: Path, venv: Path) -> tuple[float, str]:
    if work.exists():
        shutil.rmtree(work)
    data = work / "user_data" / "data" / "binance"
    (work / "user_data" / "strategies").mkdir(parents=True)
    data.mkdir(parents=True)
    by_pair: dict[str, list[list[float]]] = {}
    for c in candles:
        by_pair.setdefault(c.symbol.replace("_", "/"), []).append(
            [c.open_time * 1000, c.open, c.high, c.low, c.close, c.turnover]
        )
    for pair, rows in by_pair.items():
        (data / f"{pair.replace('/', '_')}-1m.json").write_text(json.dumps(rows))
    (work / "user_data" / "strategies" / "cdb_momentum.py").write_text(STRATEGY)
    (work / "runner.py").write_text(RUNNER)
    config = {
        "max_open_trades": 5,
        "stake_currency": "USDT",
        "stake_amount": "unlimited",
        "tradable_balance_ratio": 0.5,
        "dry_run": True,
        "dry_run_wallet": 10_000,
        "timeframe": "1m",
        "trading_mode": "spot",
        "fee": 0.0002,
        "dataformat_ohlcv": "json",
        "exchange": {"name": "binance", "pair_whitelist": sorted(by_pair), "pair_blacklist": []},
        "pairlists": [{"method": "StaticPairList"}],
        "entry_pricing": {"price_side": "other"},
        "exit_pricing": {"price_side": "other"},
        "user_data_dir": str(work / "user_data"),
        "strategy": "CdbMomentum",
    }
    (work / "config.json").write_text(json.dumps(config))
    cpu = max(os.sched_getaffinity(0))
    best = float("inf")
    for round_ in range(2):
        out = work / f"timing-{round_}.json"
        run = subprocess.run(
            ["taskset", "-c", str(cpu), str(venv / "bin" / "python"), "runner.py",
             "config.json", str(out)],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=900,
        )  # fmt: skip
        if run.returncode != 0 or not out.exists():
            raise RuntimeError(f"freqtrade backtesting failed: {run.stderr.strip()[-300:]}")
        best = min(best, float(json.loads(out.read_text())["backtest_s"]))
        (work / "freqtrade.log").write_text(run.stdout + run.stderr)
    return len(candles) / best, f"freqtrade log: {work / 'freqtrade.log'}"


def run(stack: LocalStack) -> list[dict[str, Any]]:
    data_dir = Path(stack.data_dir)
    candles = candles_for(data_dir)
    rate, replay = replay_rate(candles)
    result = replay.result
    rows: list[dict[str, Any]] = [
        {
            "name": "replay speed (one core)",
            "value": rate,
            "unit": "candles/s",
            "note": (
                f"{len(candles):,} Min1 candles ({SYMBOLS} symbols x {MINUTES} min, mexc_sim "
                f"pump, seed {SEED}): {len(result.signals)} signals, {len(result.orders)} "
                f"orders; best of {ROUNDS}"
            ),
        }
    ]
    venv = data_dir / "freqtrade-venv"
    reason = install_freqtrade(venv)
    if reason is None:
        try:
            peer, note = freqtrade_rate(candles, data_dir / "freqtrade-work", venv)
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as error:
            reason = str(error)
    if reason is not None:
        print(f"bench_replay: freqtrade peer skipped: {reason}")
        rows.append(
            {
                "name": "freqtrade backtest (one core)",
                "value": float("nan"),
                "unit": "candles/s",
                "note": f"SKIPPED: {reason}",
            }
        )
        return rows
    rows.append(
        {
            "name": "freqtrade backtest (one core)",
            "value": peer,
            "unit": "candles/s",
            "note": f"{FREQTRADE}, same candles and rule; {note}",
        }
    )
    rows.append(
        {
            "name": "replay / freqtrade",
            "value": rate / peer,
            "unit": "x",
            "note": "cdb replay candles/s divided by freqtrade's",
        }
    )
    return rows
