"""``python -m cdb.mexc_sim [--symbols N] [--seed S] [--speed X] [--scenario pump] …``."""

from __future__ import annotations

import logging

import uvicorn

from cdb.core.logging import configure_logging
from cdb.mexc_sim.app import api_keys_from_env, build_app
from cdb.mexc_sim.config import parse_args
from cdb.mexc_sim.simulator import Simulator


def main() -> None:
    config = parse_args()
    configure_logging("mexc_sim")
    sim = Simulator(config)
    logging.getLogger("cdb.mexc_sim").info(
        "mexc_sim serving",
        extra={"port": config.port, "symbols": config.symbols, "speed": config.speed},
    )
    uvicorn.run(
        build_app(sim, api_keys_from_env()),
        host=config.host,
        port=config.port,
        log_config=None,
        access_log=False,
        ws_ping_interval=None,
    )


if __name__ == "__main__":
    main()
