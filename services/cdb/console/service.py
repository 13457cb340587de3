"""console: the owner's web console (port 8007). See :mod:`cdb.console`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cdb.console.actions import BotControl
from cdb.console.books import Books
from cdb.console.kube import BotClient
from cdb.console.settings import ConsoleSettings
from cdb.console.web import Web
from cdb.core.http import APIRouter
from cdb.core.service import Kernel, Service, public_config

__all__ = ["Console"]


class Console(Service[ConsoleSettings]):
    name = "console"
    watches_input = False  # it consumes no stream: a quiet market is not its failure

    def __init__(self, settings: ConsoleSettings, kernel: Kernel) -> None:
        super().__init__(settings, kernel)
        bot = settings.tradingbot()
        kube = (
            BotClient(settings.console_kube_api, *bot, Path(settings.console_kube_account_dir))
            if bot
            else None
        )
        self.books = Books(kernel.database)
        self.web = Web(settings, self.books, kernel.bus, BotControl(kernel.bus, self.books, kube),
                       kernel.stop)  # fmt: skip

    def router(self) -> APIRouter:
        return self.web.router()

    def status(self) -> dict[str, Any]:
        return {
            "config": public_config(self.settings),
            "login": "configured" if self.settings.password() else "no password file",
            "bot_control": self.web.control.mode,
        }
