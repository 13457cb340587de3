"""Every service's health as the console sees it: each one's ``/health`` and ``/status``."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["ServiceHealth", "probe_all"]


@dataclass(frozen=True)
class ServiceHealth:
    name: str
    status: str  # ok, stale, starting, down
    detail: str
    last_event_at: float | None


async def _probe(client: httpx.AsyncClient, name: str, url: str) -> ServiceHealth:
    try:
        health = await client.get(f"{url}/health")
        body: dict[str, Any] = health.json() if health.content else {}
        status = str(body.get("status", "down" if health.status_code >= 500 else "ok"))
        detail = str(body.get("waiting_for", ""))[:200]
        last = None
        with contextlib.suppress(httpx.HTTPError, ValueError, AttributeError):
            info = (await client.get(f"{url}/status")).json()
            value = info.get("last_event_at")
            last = float(value) if isinstance(value, int | float) else None
        return ServiceHealth(name, status, detail, last)
    except (httpx.HTTPError, ValueError) as error:
        return ServiceHealth(name, "down", type(error).__name__, None)


async def probe_all(services: dict[str, str], timeout_s: float = 1.5) -> list[ServiceHealth]:
    if not services:
        return []
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        return list(
            await asyncio.gather(*(_probe(client, name, url) for name, url in services.items()))
        )
