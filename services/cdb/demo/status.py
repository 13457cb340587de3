"""``cdb status``: every service's health and the configuration it runs with."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict
from rich.console import Console
from rich.table import Table

from cdb.core.probe import probe_health
from cdb.demo.plan import DEFAULT_PORTS, OPTIONAL, START_ORDER

__all__ = ["ServiceReport", "gather_status", "print_status"]


class ServiceReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    url: str
    health: str
    config: dict[str, Any] = {}
    counters: dict[str, float] = {}

    @property
    def ok(self) -> bool:
        return self.health == "ok"


async def _one(client: httpx.AsyncClient, name: str, url: str) -> ServiceReport:
    health = await probe_health(client, url)
    config: dict[str, Any] = {}
    counters: dict[str, float] = {}
    try:
        reply = await client.get(f"{url}/status", timeout=2.0)
        body = reply.json()
        if isinstance(body, dict):
            config = body.get("config") or {}
            counters = body.get("counters") or {}
    except (httpx.HTTPError, ValueError):
        pass
    return ServiceReport(name=name, url=url, health=health, config=config, counters=counters)


async def gather_status(
    port_offset: int = 0, host: str = "127.0.0.1", services: tuple[str, ...] = START_ORDER
) -> list[ServiceReport]:
    """Ask every service (at the demo ports plus ``port_offset``) for health and status."""
    async with httpx.AsyncClient() as client:
        reports = await asyncio.gather(
            *(
                _one(client, name, f"http://{host}:{DEFAULT_PORTS[name] + port_offset}")
                for name in services
            )
        )
    # an optional service (ml_advisor) that is not running is not a failure
    return [r for r in reports if not (r.name in OPTIONAL and r.health.startswith("unreachable"))]


def print_status(console: Console, reports: list[ServiceReport], *, as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps([r.model_dump() for r in reports]))
        return
    table = Table(title="cdb status")
    for column in ("service", "url", "health", "config in force", "counters"):
        table.add_column(column, overflow="fold")
    for report in reports:
        style = "green" if report.ok else "red"
        config = "\n".join(f"{k}={v}" for k, v in sorted(report.config.items())) or "-"
        counters = "\n".join(f"{k}={v:g}" for k, v in sorted(report.counters.items()) if v) or "-"
        table.add_row(report.name, report.url, f"[{style}]{report.health}[/]", config, counters)
    console.print(table)
