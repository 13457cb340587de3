"""The ``cdb replay`` command (registered in :mod:`cdb.cli`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import typer

from cdb.core.events import Candle
from cdb.replay.engine import Replay, ReplayConfig
from cdb.replay.grid import CandleGrid, grid_of_candles
from cdb.replay.history import (
    HistoryError,
    generate_candles,
    load_history,
    save_candles,
    save_history,
)
from cdb.risk_manager.rules import RiskLimits
from cdb.signal_engine.strategy import StrategyParams

ROOT = Path(__file__).resolve().parents[3]

__all__ = ["replay"]


def replay(
    candles: Path = typer.Option(
        None, "--candles", help="CSV/Parquet in MEXC kline layout (default: generate)."
    ),
    symbol: str = typer.Option(None, help="Symbol of a file without a 'symbol' column."),
    symbols: int = typer.Option(20, min=1, help="Generated: how many contracts."),
    minutes: int = typer.Option(240, min=1, help="Generated: how many minutes."),
    seed: int = typer.Option(7, help="Generated: mexc_sim's seed."),
    scenario: str = typer.Option("pump", help="Generated: walk or pump."),
    save: Path = typer.Option(None, help="Also write the candles used (CSV/Parquet)."),
    convert: bool = typer.Option(
        False, "--convert", help="Only write --save (e.g. a CSV as Parquet) and stop."
    ),
    threshold_pct: float = typer.Option(3.0, min=0.0001, help="SIGNAL_THRESHOLD_PCT"),
    min_volume: float = typer.Option(100_000.0, min=0, help="SIGNAL_MIN_VOLUME"),
    lookback_min: int = typer.Option(15, min=1, help="LOOKBACK_MIN"),
    starting_equity: float = typer.Option(10_000.0, min=1, help="STARTING_EQUITY (USDT)"),
    out: Path = typer.Option(None, help="Report directory (default .cdb/replays/<time>)."),
    png: bool = typer.Option(True, help="Also write PNG charts (needs Chromium)."),
) -> None:
    """Replay candles through the live signal, risk and execution code; write the report."""
    from cdb.report.render import PngExportError, write_report

    if convert and save is None:
        typer.echo("replay: --convert needs --save (the file to write)", err=True)
        raise typer.Exit(2)
    history: CandleGrid | list[Candle]
    try:
        if candles is not None:
            history = load_history(candles, symbol)
            source = str(candles)
        else:
            generated = generate_candles(
                symbols=symbols, minutes=minutes, seed=seed, scenario=scenario
            )
            history = grid_of_candles(generated) or generated
            source = f"mexc_sim market model (seed {seed}, {scenario}, {symbols} symbols)"
    except HistoryError as error:
        typer.echo(f"replay: {error}", err=True)
        raise typer.Exit(2) from None
    if not isinstance(history, CandleGrid) and not history:
        typer.echo("replay: no candles", err=True)
        raise typer.Exit(2)
    if save is not None:
        if isinstance(history, CandleGrid):
            typer.echo(f"wrote {save_history(history, save)}")
        else:
            typer.echo(f"wrote {save_candles(history, save)}")
        if convert:
            return
    config = ReplayConfig(
        strategy=StrategyParams(
            threshold_pct=threshold_pct, min_volume=min_volume, lookback_min=lookback_min
        ),
        limits=RiskLimits(),
        starting_equity=starting_equity,
    )
    began = time.perf_counter()
    result = Replay(config).run(history)
    took = time.perf_counter() - began
    typer.echo(
        f"replayed {result.candles:,} candles ({result.minutes:,} minutes) from {source} "
        f"in {took:.2f}s ({result.candles / max(took, 1e-9):,.0f} candles/s): "
        f"{len(result.signals)} signals, {len(result.orders)} orders, "
        f"{len(result.rejections)} rejected"
    )
    target = out or ROOT / ".cdb" / "replays" / time.strftime("%Y%m%d-%H%M%S")
    books = result.books.model_copy(update={"source": f"replay of {source}"})
    try:
        report = asyncio.run(write_report(books, target, title="cdb replay", png=png))
    except PngExportError as error:
        typer.echo(f"wrote {target / 'report.html'}; PNG export failed: {error}", err=True)
        raise typer.Exit(1) from None
    stats = report.stats
    typer.echo(
        f"equity {stats.start_equity or starting_equity:,.2f} → "
        f"{stats.end_equity or starting_equity:,.2f} USDT, {stats.closed_positions} closed "
        f"trades ({stats.wins} won); wrote {report.html}"
    )
    for path in report.pngs:
        typer.echo(f"wrote {path}")
