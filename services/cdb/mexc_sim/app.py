"""The one ASGI app on the one port, and the ways to run it (process or in-process)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from cdb.mexc_sim.config import SimConfig
from cdb.mexc_sim.private_api import PrivateExchange, private_router
from cdb.mexc_sim.rest import rest_router
from cdb.mexc_sim.simulator import Simulator
from cdb.mexc_sim.websocket import serve_session

__all__ = ["RunningSimulator", "api_keys_from_env", "build_app", "running_simulator"]


def api_keys_from_env() -> dict[str, str]:
    """``MEXC_SIM_API_KEY`` → ``MEXC_SIM_API_SECRET``; empty when unset."""
    key = os.environ.get("MEXC_SIM_API_KEY", "")
    secret = os.environ.get("MEXC_SIM_API_SECRET", "")
    return {key: secret} if key and secret else {}


def build_app(
    sim: Simulator,
    api_keys: dict[str, str] | None = None,
    exchange: PrivateExchange | None = None,
) -> FastAPI:
    """WebSocket ``/edge``, REST ``/api/v1/contract/...``, the private order and position
    endpoints (their state in ``exchange``, to inspect or fault it), ``/health`` and
    ``/sim/*`` controls."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        pusher = asyncio.create_task(sim.run(stop), name="mexc-sim-push")
        try:
            yield
        finally:
            stop.set()
            await sim.drop_connections()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pusher, timeout=5.0)

    app = FastAPI(title="mexc_sim", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.include_router(rest_router(sim))

    @app.websocket("/edge")
    async def edge(websocket: WebSocket) -> None:
        await serve_session(sim, websocket)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/sim/status")
    async def status() -> dict[str, Any]:
        return sim.describe()

    @app.get("/sim/faults")
    async def faults() -> dict[str, Any]:
        return sim.faults.model_dump()

    @app.post("/sim/faults")
    async def set_faults(changes: dict[str, Any]) -> JSONResponse:
        try:
            return JSONResponse(sim.set_faults(**changes).model_dump())
        except ValidationError as error:
            return JSONResponse({"error": error.errors(include_url=False)}, status_code=422)

    @app.post("/sim/drop")
    async def drop() -> dict[str, int]:
        return {"dropped": await sim.drop_connections()}

    app.include_router(
        private_router(price_of=sim.price_of, api_keys=api_keys or {}, exchange=exchange)
    )
    return app


@dataclass
class RunningSimulator:
    """A simulator serving on a real port in this event loop (for tests and benches)."""

    sim: Simulator
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/edge"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@asynccontextmanager
async def running_simulator(
    config: SimConfig,
    api_keys: dict[str, str] | None = None,
    exchange: PrivateExchange | None = None,
) -> AsyncIterator[RunningSimulator]:
    """Serve ``config`` on 127.0.0.1 (``port=0``: any free port) until the block ends."""
    sim = Simulator(config)
    server = _QuietServer(
        uvicorn.Config(
            build_app(sim, api_keys, exchange),
            host=config.host,
            port=config.port,
            log_config=None,
            access_log=False,
            ws_ping_interval=None,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("mexc_sim did not start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningSimulator(sim=sim, port=port)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10.0)
