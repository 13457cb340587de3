"""Reading another process's ``/health`` from outside: the client side of the contract
:mod:`cdb.core.http` serves (used by the demo's supervisor, ``cdb status`` and the view)."""

from __future__ import annotations

import httpx

__all__ = ["probe_health"]


async def probe_health(client: httpx.AsyncClient, url: str, path: str = "/health") -> str:
    """The ``status`` a service's ``/health`` reports, or why it could not be read; for
    another ``path`` (Prometheus's ``/-/ready``) an HTTP 200 is ``ok``."""
    try:
        reply = await client.get(f"{url}{path}", timeout=2.0)
    except httpx.HTTPError as error:
        return f"unreachable ({type(error).__name__})"
    if path != "/health":
        return "ok" if reply.status_code == 200 else f"HTTP {reply.status_code}"
    try:
        body = reply.json()
    except ValueError:
        return f"HTTP {reply.status_code}"
    status = body.get("status") if isinstance(body, dict) else None
    return str(status) if status else f"HTTP {reply.status_code}"
