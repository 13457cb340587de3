"""``cdb ml``: train, evaluate and list models; generate a synthetic history.

The rule the evaluation compares against is handed in by the caller (``cdb.cli`` passes
signal_engine's ``MomentumStrategy``): services never import each other.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cdb.ml_advisor.rules import MarketDataRule

if TYPE_CHECKING:
    import pandas as pd

# The commands import pandas, XGBoost and plotly when they run, not when `cdb` starts.

__all__ = ["RuleFactory", "build_app"]

RuleFactory = Callable[[float, float], MarketDataRule]
"""(threshold_pct, min_volume) -> a fresh rule instance."""

DEFAULT_MODEL_DIR = Path("/data/models")
MODEL_DIR_OPTION = typer.Option(
    DEFAULT_MODEL_DIR, envvar="ML_MODEL_DIR", help="Where model versions live."
)
FILE_OPTION = typer.Option(
    None, "--file", help="CSV/Parquet in MEXC kline layout with a symbol column."
)
DB_OPTION = typer.Option(
    False, "--from-db", help="Read the candles table (POSTGRES_* from the environment)."
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _load(file: Path | None, from_db: bool, since: int | None, until: int | None) -> pd.DataFrame:
    from cdb.core.config import ConfigError, PostgresSettings, load_settings
    from cdb.core.db import DatabaseError
    from cdb.ml_advisor.candle_history import HistoryError, load_history_db, load_history_file

    if (file is None) != from_db:
        raise _fail("give exactly one source: --file PATH or --from-db")
    try:
        if file is not None:
            history = load_history_file(file)
            if since is not None:
                history = history[history["time"] >= since]
            if until is not None:
                history = history[history["time"] < until]
            if history.empty:
                raise HistoryError(f"{file}: no candles in the chosen period")
            return history.reset_index(drop=True)
        settings = load_settings(PostgresSettings)
        return load_history_db(settings, since=since, until=until)
    except (HistoryError, ConfigError) as error:
        raise _fail(str(error)) from None
    except (OSError, DatabaseError) as error:
        raise _fail(f"cannot read the candles table: {str(error).strip()}") from None


def _when(value: str | None) -> int | None:
    from cdb.ml_advisor.candle_history import HistoryError, parse_when

    if value is None:
        return None
    try:
        return parse_when(value)
    except HistoryError as error:
        raise _fail(str(error)) from None


def build_app(rule_factory: RuleFactory, rule_name: str = "momentum") -> typer.Typer:
    app = typer.Typer(
        help="The ML advisor's model lifecycle (shadow mode: its signals are never traded).",
        no_args_is_help=True,
        add_completion=False,
    )

    @app.command()
    def train(
        file: Path | None = FILE_OPTION,
        from_db: bool = DB_OPTION,
        since: str | None = typer.Option(None, help="First bar (unix s or ISO time)."),
        until: str | None = typer.Option(None, help="Bars before this only (unix s or ISO)."),
        model_dir: Path = MODEL_DIR_OPTION,
        version: str | None = typer.Option(None, help="Version name (default: time-datahash)."),
        seed: int = typer.Option(42, help="Random seed: same data + seed = same model."),
        rounds: int = typer.Option(200, min=1, help="Boosting rounds."),
        max_depth: int = typer.Option(4, min=1, max=12),
        folds: int = typer.Option(4, min=1, max=20, help="Walk-forward folds."),
        horizon: int = typer.Option(15, min=1, help="Label horizon in minutes."),
        min_return_pct: float = typer.Option(0.5, help="Label: return >= this within horizon."),
        threshold: float = typer.Option(0.7, min=0, max=1, help="Gate for fold precision."),
        threads: int = typer.Option(1, min=1, help="XGBoost threads (fixed for determinism)."),
    ) -> None:
        """Train a model on candles (walk-forward validated) and store a new version."""
        from rich.console import Console

        from cdb.ml_advisor.dataset import LabelSpec
        from cdb.ml_advisor.model_store import ModelStoreError, save_artifact
        from cdb.ml_advisor.training import TrainingConfig, TrainingError, train_model

        history = _load(file, from_db, _when(since), _when(until))
        config = TrainingConfig(
            seed=seed,
            num_boost_round=rounds,
            max_depth=max_depth,
            folds=folds,
            nthread=threads,
            threshold=threshold,
            label=LabelSpec(horizon_min=horizon, min_return_pct=min_return_pct),
        )
        try:
            result = train_model(history, config, version=version)
            path = save_artifact(model_dir, result.manifest, result.booster)
        except (TrainingError, ModelStoreError) as error:
            raise _fail(str(error)) from None
        except OSError as error:
            raise _fail(f"cannot write the model under {model_dir}: {error}") from None
        metrics = result.manifest.metrics
        console = Console()
        console.print(f"trained {result.manifest.version} -> {path}")
        console.print(
            f"rows {result.manifest.training_rows:,}, symbols "
            f"{len(result.manifest.training_symbols)}, data hash "
            f"{result.manifest.training_data_hash[:16]}"
        )
        for fold in metrics.folds:
            auc = "-" if fold.auc is None else f"{fold.auc:.3f}"
            precision = (
                "-" if fold.precision_at_threshold is None else f"{fold.precision_at_threshold:.3f}"
            )
            console.print(
                f"fold {fold.fold}: train {fold.train_rows:,} rows, validate "
                f"{fold.validation_rows:,}: AUC {auc}, logloss {fold.logloss:.4f}, "
                f"base rate {fold.base_rate:.3f}, precision@{threshold:g} {precision} "
                f"({fold.signals_at_threshold} signals)"
            )
        mean_auc = "-" if metrics.mean_auc is None else f"{metrics.mean_auc:.3f}"
        console.print(f"walk-forward mean AUC {mean_auc}, mean logloss {metrics.mean_logloss:.4f}")

    @app.command("evaluate")
    def evaluate_command(
        file: Path | None = FILE_OPTION,
        from_db: bool = DB_OPTION,
        since: str | None = typer.Option(
            None, help="First bar to signal on (default: after the model's training period)."
        ),
        until: str | None = typer.Option(None, help="Bars before this only."),
        model_dir: Path = MODEL_DIR_OPTION,
        model_version: str | None = typer.Option(
            None, envvar="ML_MODEL_VERSION", help="Default: the latest."
        ),
        threshold: float = typer.Option(0.7, min=0, max=1, help="Model confidence gate."),
        rule_threshold_pct: float = typer.Option(3.0, help="Rule: 15-minute change threshold."),
        rule_min_volume: float = typer.Option(100_000.0, help="Rule: window turnover (USDT)."),
        fee_pct: float = typer.Option(0.02, min=0, help="Taker fee per side, percent."),
        notional: float = typer.Option(1000.0, min=0, help="USDT per signal."),
        include_training_period: bool = typer.Option(
            False, help="Allow bars the model was trained on (in-sample, flattering)."
        ),
        out_dir: Path = typer.Option(Path("reports/ml"), help="Where the report goes."),
        png: bool = typer.Option(True, help="Also render a PNG (needs Chromium)."),
    ) -> None:
        """Replay candles through the rule and the model; table + HTML (+ PNG) report."""
        from rich.console import Console

        from cdb.ml_advisor.evaluation import EvaluationConfig, evaluate
        from cdb.ml_advisor.features import WARMUP_BARS
        from cdb.ml_advisor.inference import Predictor
        from cdb.ml_advisor.model_store import ModelStoreError, load_model
        from cdb.ml_advisor.report import (
            ReportError,
            evaluation_figure,
            evaluation_table,
            write_html,
            write_png,
        )

        try:
            model = load_model(model_dir, model_version)
        except ModelStoreError as error:
            raise _fail(str(error)) from None
        manifest = model.manifest
        start = _when(since)
        if start is None and not include_training_period:
            start = manifest.training_end + 60
        warm_from = None if start is None else start - WARMUP_BARS * 60
        history = _load(file, from_db, warm_from, _when(until))
        config = EvaluationConfig(
            threshold=threshold,
            horizon_min=manifest.label_horizon_min,
            fee_pct=fee_pct,
            notional_usdt=notional,
            cooldown_min=manifest.label_horizon_min,
        )
        try:
            result = evaluate(
                history,
                Predictor(model),
                rule_factory(rule_threshold_pct, rule_min_volume),
                rule_name=rule_name,
                config=config,
                since=start,
            )
        except ValueError as error:
            hint = "" if include_training_period else " (or pass --include-training-period)"
            raise _fail(f"{error}{hint}") from None
        if result.training_overlap_bars and not include_training_period:
            raise _fail(
                f"{result.training_overlap_bars} bars lie inside the model's training period; "
                "pick --since after it or pass --include-training-period"
            )
        console = Console(width=160)
        table = evaluation_table(result)
        console.print(table)
        with console.capture() as captured:
            console.print(table)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = out_dir / f"{manifest.version}-{stamp}"
        figure = evaluation_figure(result)
        html = write_html(figure, captured.get(), target / "evaluation.html")
        result.trades.to_csv(target / "signals.csv", index=False)
        (target / "summary.json").write_text(
            json.dumps(
                {
                    "model_version": result.model_version,
                    "rule": result.rule_name,
                    "start": result.start,
                    "end": result.end,
                    "symbols": result.symbols,
                    "bars": result.bars,
                    "training_overlap_bars": result.training_overlap_bars,
                    "config": dataclasses.asdict(result.config),
                    "strategies": [dataclasses.asdict(s) for s in result.summaries],
                },
                indent=2,
            )
        )
        console.print(f"report: {html}")
        if png:
            try:
                console.print(f"png: {write_png(figure, target / 'evaluation.png')}")
            except ReportError as error:
                raise _fail(str(error)) from None

    @app.command()
    def models(model_dir: Path = MODEL_DIR_OPTION) -> None:
        """List the stored model versions, oldest first."""
        from cdb.ml_advisor.model_store import list_versions

        versions = list_versions(model_dir)
        if not versions:
            typer.echo(f"no models under {model_dir} (run: cdb ml train)")
            return
        for manifest in versions:
            auc = manifest.metrics.mean_auc
            created = datetime.fromtimestamp(manifest.created_at, UTC).isoformat(timespec="seconds")
            typer.echo(
                f"{manifest.version}  created {created}  rows {manifest.training_rows:,}  "
                f"walk-forward AUC {'-' if auc is None else f'{auc:.3f}'}"
            )

    @app.command()
    def synth(
        out: Path = typer.Option(..., help="Target .csv or .parquet file."),
        symbols: int = typer.Option(8, min=1, max=500),
        days: float = typer.Option(4.0, min=0.1),
        seed: int = typer.Option(7),
        start: str = typer.Option("2025-01-01T00:00:00Z", help="First bar (unix s or ISO)."),
    ) -> None:
        """Write a seeded synthetic history (random walk with momentum episodes)."""
        from cdb.ml_advisor.synthetic import generate_history

        history = generate_history(
            symbols=symbols, minutes=int(days * 1440), seed=seed, start=_when(start) or 0
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() in (".parquet", ".pq"):
            history.to_parquet(out, index=False)
        else:
            history.to_csv(out, index=False)
        typer.echo(f"wrote {len(history):,} bars of {symbols} symbols to {out}")

    return app
