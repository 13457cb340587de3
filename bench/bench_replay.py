"""Replay speed against freqtrade: the same candles, the same rule, the same trades, one core.

* cdb: ``cdb replay``'s engine from the Parquet file (``load_history``: columns → the
  minute-by-symbol grid, then ``Replay.run``: the screener's window with numpy, the live
  strategy, risk rules and paper fills on the movers that can matter) over a day of Min1
  candles from mexc_sim's market model. Timed from opening the file to the last trade.
* freqtrade: installed by this benchmark into its own venv (``<data>/freqtrade-venv``,
  never the project's), fed the same candles as JSON OHLCV files, with signal_engine's
  rule as a freqtrade strategy: 15-minute % change >= 3 with >= 100,000 USDT turnover,
  and its cooldown (no new signal on a pair within 15 minutes of the last); a 2 % stop,
  no take-profit, 10 % of equity per trade, at most 5 trades (50 %). Timed: freqtrade's
  ``backtest_one_strategy`` (indicators + simulation), not its start-up or file loading.
  freqtrade's exchange metadata is normally downloaded; here ccxt is given the pairs'
  market entries, so it runs offline.
* The same work: neither has a daily circuit breaker (cdb's is set to 100 % for this
  run: freqtrade has no equivalent), both count every trade entered. Both trade counts are
  printed, and how many trades are the same (symbol and entry minute); counts further
  apart than ``max(3, 3 %)`` make an error row: a speed ratio between engines doing
  different work means nothing.
* Both cold: every repeat is a fresh process (imports done before the clock starts),
  cdb and freqtrade alternating, both pinned with ``taskset`` to the same CPU; min and
  median of the repeats, with the load average after each figure's runs. The minute-by-
  minute path (every mover through the strategy, as the live test drives it) is timed
  the same way for comparison.

If freqtrade cannot be installed or run, the module ends in an error row: never a silent
skip.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from cdb.localstack import LocalStack
from cdb.replay import generate_candles, grid_of_candles, load_history, save_history

FREQTRADE = "freqtrade==2026.9"
SYMBOLS = 20
MINUTES = 1440
SEED = 7
ROUNDS = 9  # fresh processes per engine, alternating
MINUTE_PATH_ROUNDS = 3
TARGET = 10.0  # issue 17: replay at least 10x freqtrade on the same candles
NO_BREAKER = 100.0  # max daily loss %: the breaker never trips (freqtrade has none)

STRATEGY = '''
from pandas import DataFrame
from freqtrade.strategy import IStrategy


class CdbMomentum(IStrategy):
    """signal_engine's rule: 15-minute change >= 3 % with >= 100,000 USDT traded, and its
    cooldown: no new signal on a pair within 15 minutes of the last one."""

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
        wanted = ((df["pct"] >= 3.0) & (df["vol15"] >= 100000)).to_numpy()
        keep, last = [], None
        for row in wanted.nonzero()[0]:  # the cooldown: 15 one-minute rows after a signal
            if last is None or row - last >= 15:
                keep.append(row)
                last = row
        df["enter_long"] = 0
        df.loc[df.index[keep], "enter_long"] = 1
        return df

    def populate_exit_trend(self, df: DataFrame, metadata: dict) -> DataFrame:
        return df
'''

CDB_RUNNER = '''
"""One cold cdb replay: a fresh process, imports first, then the clock."""
import json, sys, time
from pathlib import Path

import pyarrow, pyarrow.compute, pyarrow.parquet  # imports before the clock, as freqtrade's

from cdb.replay import CandleGrid, Replay, ReplayConfig, load_history
from cdb.risk_manager.rules import RiskLimits

path, out, path_kind, no_breaker = Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
config = ReplayConfig(limits=RiskLimits(max_daily_loss_pct=no_breaker))
if path_kind == "grid":
    began = time.perf_counter()
    history = load_history(path)
    loaded = time.perf_counter()
    result = Replay(config).run(history)
    took = time.perf_counter() - began
    replay_s = time.perf_counter() - loaded
    grid = isinstance(history, CandleGrid)
else:  # the minute path, from candles already in memory (reading them is not timed)
    history = load_history(path)
    candles = history.to_candles() if isinstance(history, CandleGrid) else history
    began = time.perf_counter()
    result = Replay(config).run_minutes(candles)
    took = replay_s = time.perf_counter() - began
    grid = False
json.dump({"took_s": took, "replay_s": replay_s, "candles": result.candles, "grid": grid,
           "signals": len(result.signals), "movers": result.movers,
           "fed": len(result.market_data),
           "trades": [[o.symbol, int(o.timestamp)] for o in result.orders]}, open(out, "w"))
'''

RUNNER = '''
"""freqtrade backtesting offline: the pairs' ccxt market entries are given, not fetched."""
import json, sys, time
from unittest.mock import patch

from freqtrade.exchange.exchange import Exchange
from freqtrade.optimize.backtesting import Backtesting

config_path, out_path = sys.argv[1], sys.argv[2]
export = sys.argv[3] if len(sys.argv) > 3 else ""  # a directory: write the trades there
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
        main(["backtesting", "-c", config_path, "--export", "trades" if export else "none"]
             + (["--backtest-directory", export] if export else []))
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise
json.dump(timings, open(out_path, "w"))
'''


def candles_for(data_dir: Path) -> Path:
    """The day of candles as Parquet (generated once: mexc_sim's model takes a while)."""
    path = data_dir / f"replay-candles-{SYMBOLS}x{MINUTES}-seed{SEED}.parquet"
    if not path.exists():
        grid = grid_of_candles(generate_candles(symbols=SYMBOLS, minutes=MINUTES, seed=SEED))
        assert grid is not None, "mexc_sim's candles always fit a grid"
        save_history(grid, path)
    return path


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


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


def freqtrade_work(parquet: Path, work: Path) -> int:
    """freqtrade's user_data for the same candles (JSON OHLCV, the USDT turnover as its
    volume column) and config; the number of candles written."""
    if work.exists():
        shutil.rmtree(work)
    data = work / "user_data" / "data" / "binance"
    (work / "user_data" / "strategies").mkdir(parents=True)
    data.mkdir(parents=True)
    history = load_history(parquet)
    candles = history.to_candles() if not isinstance(history, list) else history
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
    return len(candles)


def freqtrade_once(work: Path, venv: Path, cpu: int, round_: int) -> dict[str, Any]:
    """One cold freqtrade backtest pinned to ``cpu``: its time, and (first round) its trades."""
    out = work / f"timing-{round_}.json"
    export = work / "trades" if round_ == 0 else None
    if export is not None:
        export.mkdir(exist_ok=True)
    run = subprocess.run(
        ["taskset", "-c", str(cpu), str(venv / "bin" / "python"), "runner.py", "config.json",
         str(out), *([str(export)] if export else [])],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    (work / "freqtrade.log").write_text(run.stdout + run.stderr)
    if run.returncode != 0 or not out.exists():
        raise RuntimeError(f"freqtrade backtesting failed: {run.stderr.strip()[-300:]}")
    figures: dict[str, Any] = {"took_s": float(json.loads(out.read_text())["backtest_s"])}
    if export is not None:
        figures["trades"] = freqtrade_trades(export)
    return figures


def freqtrade_trades(export: Path) -> list[list[Any]]:
    """(symbol, entry time) of every trade freqtrade's export holds."""
    for archive in sorted(export.glob("backtest-result-*.zip")):
        with zipfile.ZipFile(archive) as zipped:
            for name in zipped.namelist():
                if name.endswith(".json") and "_config" not in name and "meta" not in name:
                    content = json.loads(zipped.read(name))
                    if "strategy" in content:
                        trades = content["strategy"]["CdbMomentum"]["trades"]
                        return [
                            [t["pair"].replace("/", "_"), t["open_timestamp"] // 1000]
                            for t in trades
                        ]
    raise RuntimeError(f"freqtrade wrote no trades under {export}")


def cdb_once(parquet: Path, work: Path, cpu: int, path_kind: str) -> dict[str, Any]:
    """One cold cdb replay pinned to ``cpu`` (a fresh process; imports before the clock)."""
    out = work / f"cdb-{path_kind}.json"
    run = subprocess.run(
        ["taskset", "-c", str(cpu), sys.executable, "-c", CDB_RUNNER, str(parquet), str(out),
         path_kind, str(NO_BREAKER)],
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"cdb replay failed: {run.stderr.strip()[-300:]}")
    figures: dict[str, Any] = json.loads(out.read_text())
    return figures


def spread(times: list[float], candles: int) -> tuple[float, float, str]:
    """Median and best rate (candles/s) of repeats, and a note with both times."""
    median, best = statistics.median(times), min(times)
    note = (f"median of {len(times)} cold runs {median * 1000:,.1f} ms, min "
            f"{best * 1000:,.1f} ms (best {candles / best:,.0f} candles/s)")  # fmt: skip
    return candles / median, candles / best, note


def met(ratio: float) -> str:
    return "met" if ratio >= TARGET else "NOT met"


def run(stack: LocalStack) -> list[dict[str, Any]]:
    data_dir = Path(stack.data_dir)
    parquet = candles_for(data_dir)
    work = data_dir / "replay-work"
    work.mkdir(exist_ok=True)
    venv = data_dir / "freqtrade-venv"
    reason = install_freqtrade(venv)
    if reason is not None:
        raise RuntimeError(f"freqtrade peer unavailable: {reason}")
    ft_work = data_dir / "freqtrade-work"
    candles = freqtrade_work(parquet, ft_work)
    cpu = max(os.sched_getaffinity(0))
    grid_times: list[float] = []
    memory_times: list[float] = []
    minute_times: list[float] = []
    ft_times: list[float] = []
    cdb: dict[str, Any] = {}
    minute: dict[str, Any] = {}
    ft_trades: list[list[Any]] = []
    loads: dict[str, str] = {}
    for round_ in range(ROUNDS):  # alternating, so both see the same neighbours
        cdb = cdb_once(parquet, work, cpu, "grid")
        grid_times.append(cdb["took_s"])
        memory_times.append(cdb["replay_s"])
        loads["grid"] = load()
        ft = freqtrade_once(ft_work, venv, cpu, round_)
        ft_times.append(ft["took_s"])
        ft_trades = ft.get("trades", ft_trades)
        loads["freqtrade"] = load()
        if round_ < MINUTE_PATH_ROUNDS:
            minute = cdb_once(parquet, work, cpu, "minutes")
            minute_times.append(minute["took_s"])
            loads["minutes"] = load()
    if not cdb["grid"] or cdb["candles"] != candles:
        raise RuntimeError(f"the replay did not take the grid path over {candles} candles")
    if cdb["trades"] != minute["trades"]:
        raise RuntimeError("the grid path and the minute path made different trades")
    ours, theirs = len(cdb["trades"]), len(ft_trades)
    same = len({tuple(t) for t in cdb["trades"]} & {tuple(t) for t in ft_trades})
    tolerance = max(3, round(0.03 * max(ours, theirs)))
    rate, best, note = spread(grid_times, candles)
    mem_rate, mem_best, mem_note = spread(memory_times, candles)
    ft_rate, ft_best, ft_note = spread(ft_times, candles)
    m_rate, _, m_note = spread(minute_times, candles)
    work_note = (f"{candles:,} Min1 candles ({SYMBOLS} symbols x {MINUTES} min, mexc_sim "
                 f"pump, seed {SEED}), breaker off, one core (taskset -c {cpu})")  # fmt: skip
    rows: list[dict[str, Any]] = [
        {
            "name": "replay, Parquet to trades (cold, one core)",
            "value": rate,
            "unit": "candles/s",
            "note": f"{note}; {work_note}; {ours} trades, {cdb['signals']} signals, "
            f"{cdb['fed']} of {cdb['movers']} movers through the strategy",
            "load": loads["grid"],
        },
        {
            "name": "replay, grid in memory to trades (cold, one core)",
            "value": mem_rate,
            "unit": "candles/s",
            "note": f"{mem_note}; the same runs without reading the file: what freqtrade's "
            "figure times (its candles are in memory when backtest_one_strategy starts)",
            "load": loads["grid"],
        },
        {
            "name": "freqtrade backtest (cold, one core)",
            "value": ft_rate,
            "unit": "candles/s",
            "note": f"{ft_note}; {FREQTRADE}, backtest_one_strategy only (not its JSON "
            f"loading); {theirs} trades; log {ft_work / 'freqtrade.log'}",
            "load": loads["freqtrade"],
        },
        {
            "name": "trades: replay - freqtrade",
            "value": ours - theirs,
            "unit": "trades",
            "goal": "2",
            "note": f"replay {ours}, freqtrade {theirs}; {same} the same (symbol, entry "
            f"minute); allowed apart: {tolerance}",
            "load": loads["freqtrade"],
        },
        {
            "name": "replay / freqtrade, like for like (medians)",
            "value": mem_rate / ft_rate,
            "unit": "x",
            "goal": "2",
            "target": TARGET,
            "better": "higher",
            "note": f"target >= {TARGET:g}x: {met(mem_rate / ft_rate)}; best / best "
            f"{mem_best / ft_best:.1f}x; both from candles in memory",
            "load": loads["freqtrade"],
        },
        {
            "name": "replay with reading Parquet / freqtrade (medians)",
            "value": rate / ft_rate,
            "unit": "x",
            "goal": "2",
            "target": TARGET,
            "better": "higher",
            "note": f"target >= {TARGET:g}x: {met(rate / ft_rate)}; best / best "
            f"{best / ft_best:.1f}x; cdb's time includes reading the file, freqtrade's not",
            "load": loads["freqtrade"],
        },
        {
            "name": "minute path (cold, one core)",
            "value": m_rate,
            "unit": "candles/s",
            "note": f"{m_note}; every mover through the strategy, candles in memory "
            f"(reading not timed); the same {len(minute['trades'])} trades",
            "load": loads["minutes"],
        },
        {
            "name": "replay / minute path (medians)",
            "value": rate / m_rate,
            "unit": "x",
            "note": "the grid path's speed-up on the same candles and trades",
            "load": loads["minutes"],
        },
    ]
    if abs(ours - theirs) > tolerance:
        rows.insert(
            0,
            {
                "name": "error",
                "value": "-",
                "unit": "",
                "note": f"replay made {ours} trades, freqtrade {theirs}: more than "
                f"{tolerance} apart, so the speeds are not of the same work",
                "error": True,
            },
        )
    return rows
