"""The operator's HTTP face on port 8080: ``/health`` (and ``/healthz``), ``/status``, ``/metrics``.

``/health`` is a liveness answer: ``ok`` once start-up finished. A Redis or PostgreSQL
outage does not fail it (restarting the operator would not help); it shows in each bot's
``Degraded`` condition and in ``/status``.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from cdb_operator.context import OperatorContext

__all__ = ["HttpServer"]


class HttpServer:
    def __init__(self, ctx: OperatorContext) -> None:
        self.ctx = ctx
        self.runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.get("/health", self.health),
                web.get("/healthz", self.health),
                web.get("/status", self.status),
                web.get("/metrics", self.metrics),
            ]
        )
        return app

    async def health(self, _: web.Request) -> web.Response:
        if not self.ctx.ready:
            return web.json_response({"status": "starting"}, status=503)
        return web.json_response({"status": "ok"})

    async def status(self, _: web.Request) -> web.Response:
        env = self.ctx.env
        return web.json_response(
            {
                "service": "operator",
                "ready": self.ctx.ready,
                "namespace": env.operator_namespace,
                "bus": "reachable" if await self.ctx.bus.ping() else "unreachable",
                "database": "reachable" if await self.ctx.db.ping() else "unreachable",
                "bot_ws_image": env.screener_image,
                "bot_rest_url": env.bot_rest_url,
                "universe_refresh_s": env.universe_refresh_s,
                "bots": self.ctx.bots,
            }
        )

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=self.ctx.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app(), handle_signals=False, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.ctx.env.http_host, self.ctx.env.http_port)
        await site.start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
