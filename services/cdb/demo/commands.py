"""The ``cdb demo`` and ``cdb status`` commands (registered in :mod:`cdb.cli`)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import typer
from rich.console import Console

ROOT = Path(__file__).resolve().parents[3]

__all__ = ["demo", "status"]


def demo(
    data_dir: Path = typer.Option(ROOT / ".cdb", help="Project-local data directory."),
    fresh: bool = typer.Option(False, "--fresh", help="Wipe Redis, PostgreSQL and logs first."),
    headless: bool = typer.Option(False, "--headless", help="No view: run, summarise, exit."),
    duration: float = typer.Option(60.0, min=1, help="Seconds a --headless run lasts."),
    port_offset: int = typer.Option(0, min=0, help="Added to every service port (8000…8010)."),
    redis_port: int = typer.Option(16379, help="Local Redis port."),
    postgres_port: int = typer.Option(15432, help="Local PostgreSQL port."),
    symbols: int = typer.Option(40, min=1, help="How many USDT perpetuals mexc_sim lists."),
    seed: int = typer.Option(7, help="mexc_sim's random seed."),
    speed: float = typer.Option(20.0, min=0.01, help="mexc_sim's clock speed-up."),
    scenario: str = typer.Option("pump", help="mexc_sim scenario."),
    ml: bool = typer.Option(True, help="Start ml_advisor when it is installed."),
    approval: str = typer.Option(
        "auto",
        envvar="RISK_APPROVAL",
        help="manual: every order waits for your approval (cdb approvals / approve / veto).",
    ),
    approval_timeout: int = typer.Option(
        60,
        min=5,
        max=3600,
        envvar="RISK_APPROVAL_TIMEOUT_S",
        help="Seconds an order waits for approval before it is vetoed.",
    ),
) -> None:
    """Run the whole stack offline on paper, with a live view (or --headless)."""
    from cdb.demo.plan import DemoOptions
    from cdb.demo.run import run_demo

    # everything the demo writes under its data directory (Redis AOF, PostgreSQL, logs,
    # reports, password files) is the owner's alone; its children inherit the umask
    os.umask(0o077)
    if approval not in ("auto", "manual"):
        raise typer.BadParameter("auto or manual", param_hint="--approval")

    options = DemoOptions(
        port_offset=port_offset,
        redis_port=redis_port,
        postgres_port=postgres_port,
        seed=seed,
        speed=speed,
        scenario=scenario,
        with_ml=ml,
        symbols=symbols,
        approval="manual" if approval == "manual" else "auto",
        approval_timeout_s=approval_timeout,
    )
    code = asyncio.run(
        run_demo(options, data_dir, fresh=fresh, headless=headless, duration_s=duration)
    )
    raise typer.Exit(code)


def status(
    port_offset: int = typer.Option(0, min=0, help="The demo's --port-offset."),
    host: str = typer.Option("127.0.0.1", help="Where the services listen."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Every service's health and the configuration it runs with; exit 1 if any is not ok."""
    from cdb.demo.status import gather_status, print_status

    reports = asyncio.run(gather_status(port_offset, host))
    print_status(Console(), reports, as_json=as_json)
    raise typer.Exit(0 if all(r.ok for r in reports) else 1)
