"""The bot_rest service: no bus input, no database; an HTTP API in front of MEXC REST."""

from __future__ import annotations

from cdb.bot_rest.api import ApiMetrics, BotRestApi
from cdb.bot_rest.mexc import MexcRest
from cdb.bot_rest.settings import BotRestSettings
from cdb.core.http import APIRouter
from cdb.core.pacing import RequestPacer
from cdb.core.service import Kernel, Service

__all__ = ["BotRest"]


class BotRest(Service[BotRestSettings]):
    name = "bot_rest"
    uses_database = False
    watches_input = False

    def __init__(self, settings: BotRestSettings, kernel: Kernel) -> None:
        super().__init__(settings, kernel)
        pacers = {
            "detail": RequestPacer(settings.rate_detail_per_2s),
            "ticker": RequestPacer(settings.rate_ticker_per_2s),
            "kline": RequestPacer(settings.rate_kline_per_2s),
        }
        self.mexc = MexcRest(settings.mexc_rest_url, settings.rest_timeout_s, pacers)
        self.api = BotRestApi(settings, self.mexc, ApiMetrics(kernel.metrics.registry))

    def router(self) -> APIRouter:
        return self.api.router()

    async def close(self) -> None:
        await self.mexc.close()
