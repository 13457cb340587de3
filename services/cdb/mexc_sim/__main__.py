"""``python -m cdb.mexc_sim [--symbols N] [--seed S] [--speed X] [--scenario pump] …``."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn

from cdb.core.logging import configure_logging
from cdb.mexc_sim.app import api_keys_from_env, build_app
from cdb.mexc_sim.config import parse_args
from cdb.mexc_sim.simulator import Simulator


class _Server(uvicorn.Server):
    """uvicorn whose SIGTERM/SIGINT drain and exit 0 instead of re-raising the signal."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        handled = (signal.SIGTERM, signal.SIGINT)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def main() -> None:
    config = parse_args()
    configure_logging("mexc_sim")
    sim = Simulator(config)
    logging.getLogger("cdb.mexc_sim").info(
        "mexc_sim serving",
        extra={"port": config.port, "symbols": config.symbols, "speed": config.speed},
    )
    server = _Server(
        uvicorn.Config(
            build_app(sim, api_keys_from_env()),
            host=config.host,
            port=config.port,
            log_config=None,
            access_log=False,
            ws_ping_interval=None,
        )
    )
    server.run()


if __name__ == "__main__":
    main()
