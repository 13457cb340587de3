"""The headless run's summary: what reached the books and how every service fared."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from rich.console import Console
from rich.table import Table

from cdb.core.config import PostgresSettings
from cdb.demo.supervisor import Child
from cdb.report.books import connect, count_rows

__all__ = ["DemoSummary", "ServiceOutcome", "collect_summary", "print_summary"]


class ServiceOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    port: int
    startup_s: float | None
    probes: int
    bad_probes: list[str]
    exit_code: int | None
    stayed_healthy: bool


class DemoSummary(BaseModel):
    """Counts from PostgreSQL plus every service's health history; ``ok`` decides exit 0."""

    model_config = ConfigDict(frozen=True)

    duration_s: float
    counts: dict[str, int]
    services: list[ServiceOutcome]
    first_signal_s: float | None = None

    @property
    def ok(self) -> bool:
        return bool(self.services) and all(s.stayed_healthy for s in self.services)


def outcome(child: Child) -> ServiceOutcome:
    return ServiceOutcome(
        name=child.name,
        port=child.spec.port,
        startup_s=child.startup_s,
        probes=child.probes,
        bad_probes=child.bad_probes[:10],
        exit_code=child.exit_code,
        stayed_healthy=child.stayed_healthy,
    )


async def collect_summary(
    settings: PostgresSettings,
    children: list[Child],
    duration_s: float,
    first_signal_s: float | None = None,
) -> DemoSummary:
    conn = await connect(settings)
    try:
        counts = await count_rows(conn)
    finally:
        await conn.close()
    return DemoSummary(
        duration_s=duration_s,
        counts=counts,
        services=[outcome(child) for child in children],
        first_signal_s=first_signal_s,
    )


def print_summary(console: Console, summary: DemoSummary) -> None:
    books = Table(title=f"cdb demo: {summary.duration_s:.0f}s headless run")
    books.add_column("in PostgreSQL")
    books.add_column("rows", justify="right")
    for name in (
        "signals",
        "ml_signals",
        "orders",
        "fills",
        "positions_open",
        "positions_closed",
        "risk_events",
        "equity",
    ):
        books.add_row(name, f"{summary.counts.get(name, 0):,}")
    console.print(books)
    health = Table(title="services")
    for column in ("service", "port", "start-up", "probes", "health"):
        health.add_column(column)
    for service in summary.services:
        startup = f"{service.startup_s:.1f}s" if service.startup_s is not None else "-"
        if service.stayed_healthy:
            verdict = "[green]healthy throughout[/]"
        elif service.exit_code is not None:
            verdict = f"[red]exited {service.exit_code}[/]"
        else:
            verdict = f"[red]unhealthy: {', '.join(sorted(set(service.bad_probes)))}[/]"
        health.add_row(service.name, str(service.port), startup, str(service.probes), verdict)
    console.print(health)
    if summary.first_signal_s is not None:
        console.print(f"first signal {summary.first_signal_s:.1f}s after start")
    console.print(
        "[green]every service stayed healthy[/]"
        if summary.ok
        else "[red]not every service stayed healthy (logs in the data directory)[/]"
    )
