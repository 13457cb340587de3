"""``python -m cdb_operator``: the TradingBot operator, health and metrics on port 8080.

It watches TradingBots in ``OPERATOR_NAMESPACE`` (where the Redis/PostgreSQL Secrets the
screener pods need live). A bad environment variable stops it with one line per problem
(exit 2).
"""

from __future__ import annotations

import asyncio

import kopf

from cdb.core.config import load_settings_or_exit
from cdb.core.logging import configure_logging
from cdb_operator.handlers import build_registry, configure_kopf
from cdb_operator.settings import OperatorEnv


def main() -> None:
    env = load_settings_or_exit(OperatorEnv)
    configure_logging("operator", env.log_level)
    settings = kopf.OperatorSettings()
    configure_kopf(settings)
    asyncio.run(
        kopf.operator(
            registry=build_registry(env),
            settings=settings,
            namespaces=[env.operator_namespace],
            standalone=True,
        )
    )


if __name__ == "__main__":
    main()
