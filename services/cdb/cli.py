"""The ``cdb`` command: the same entry points as ``python -m cdb.<service>``, for people."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from cdb.approvals.command import approvals, approve, veto
from cdb.core.config import PostgresSettings, load_settings_or_exit
from cdb.core.db import apply_migrations
from cdb.core.schemas import schema_drift, write_schemas
from cdb.dead_letter.command import app as dead_letter_app
from cdb.demo.commands import demo, status
from cdb.ml_advisor.cli import build_app as build_ml_app
from cdb.ml_advisor.rules import MarketDataRule
from cdb.notifier.cli import build_app as build_notify_app
from cdb.replay.command import replay
from cdb.report.command import report
from cdb.signal_engine.strategy import CooldownState, MomentumStrategy, StrategyParams

app = typer.Typer(
    help="Claire de Binare: crypto momentum trading on your own machine.",
    no_args_is_help=True,
    add_completion=False,
)

ROOT = Path(__file__).resolve().parents[2]


@app.command()
def schemas(
    directory: Path = typer.Option(ROOT / "schemas", help="Where the JSON Schemas go."),
    check: bool = typer.Option(False, help="Only report drift; exit 1 if any."),
) -> None:
    """Generate schemas/*.json from the event models."""
    if check:
        drift = schema_drift(directory)
        if drift:
            typer.echo(f"schemas out of date: {', '.join(drift)} (run: cdb schemas)", err=True)
            raise typer.Exit(1)
        typer.echo("schemas up to date")
        return
    for path in write_schemas(directory):
        typer.echo(f"wrote {path}")


@app.command()
def migrate() -> None:
    """Apply database migrations (POSTGRES_* from the environment)."""
    settings = load_settings_or_exit(PostgresSettings)
    applied = asyncio.run(apply_migrations(settings))
    typer.echo(f"applied: {', '.join(applied)}" if applied else "database up to date")


app.command()(demo)
app.command()(status)
app.command()(report)
app.command()(replay)
app.command()(approvals)
app.command()(approve)
app.command()(veto)


def momentum_rule(threshold_pct: float, min_volume: float) -> MarketDataRule:
    """signal_engine's own rule for ``cdb ml evaluate`` (a fresh cooldown state per run)."""
    strategy = MomentumStrategy(StrategyParams(threshold_pct=threshold_pct, min_volume=min_volume))
    state = CooldownState()
    return lambda event: strategy.on_market_data(event, state)


app.add_typer(build_ml_app(momentum_rule), name="ml")
app.add_typer(build_notify_app(), name="notify")
app.add_typer(dead_letter_app, name="dead-letter")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
