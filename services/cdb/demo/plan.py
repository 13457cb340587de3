"""What the demo starts, in the seed's order, and the environment each process gets.

Redis and PostgreSQL come first (:class:`cdb.localstack.LocalStack`), then the exchange
simulator, the REST bot, the screener, the signal engine, risk manager and execution
service, the notifier, the ML advisor when it is installed, and the owner's console.
Every service takes its configuration from the environment; the ports are the documented
defaults plus an optional offset, so tests can run a second stack beside a running demo.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DEFAULT_PORTS",
    "DEFAULT_SYMBOLS",
    "KEEP_DOCSTRINGS",
    "OPTIMIZED",
    "PYTHON_SERVICES",
    "DemoOptions",
    "ServiceSpec",
    "demo_plan",
    "interpreter",
    "module_available",
]

DEFAULT_PORTS: dict[str, int] = {
    "bot_ws": 8000,
    "signal_engine": 8001,
    "risk_manager": 8002,
    "execution_service": 8003,
    "bot_rest": 8004,
    "ml_advisor": 8005,
    "notifier": 8006,
    "console": 8007,
    "mexc_sim": 8010,
    "alertmanager": 9093,
    "prometheus": 9090,
}

DEFAULT_SYMBOLS = 40  # mexc_sim lists this many USDT perpetuals; bot_ws screens them all

# Every service the chart deploys as a Python process (not the demo's mexc_sim, nor the
# monitoring binaries): what Prometheus scrapes, and what the memory goal sums.
PYTHON_SERVICES: tuple[str, ...] = (
    "bot_ws",
    "bot_rest",
    "signal_engine",
    "risk_manager",
    "execution_service",
    "ml_advisor",
    "notifier",
    "console",
)

# The deployable services run with ``-OO``, here as in the chart: no docstrings and no
# asserts in memory, about 3 MiB less per process (bench_footprint: each service's PSS
# both ways). Their asserts only narrow types. A service whose libraries need their
# docstrings at run time keeps them: xgboost's scikit-learn wrapper edits its own at import.
KEEP_DOCSTRINGS: frozenset[str] = frozenset({"ml_advisor"})
OPTIMIZED: frozenset[str] = frozenset(PYTHON_SERVICES) - KEEP_DOCSTRINGS


def interpreter(name: str) -> list[str]:
    """The Python command line ``cdb.<name>`` runs under, up to ``-m``."""
    return [sys.executable, "-OO"] if name in OPTIMIZED else [sys.executable]


# The seed's order: the exchange first, then what reads it, then what reads them.
START_ORDER: tuple[str, ...] = (
    "mexc_sim",
    "bot_rest",
    "bot_ws",
    "signal_engine",
    "risk_manager",
    "execution_service",
    "notifier",
    "ml_advisor",
    "console",
)
OPTIONAL: frozenset[str] = frozenset({"ml_advisor"})


class DemoOptions(BaseModel):
    """Everything ``cdb demo`` can be told; the defaults are the documented demo."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    port_offset: int = Field(default=0, ge=0, le=50_000)
    redis_port: int = Field(default=16379, gt=0, lt=65536)
    postgres_port: int = Field(default=15432, gt=0, lt=65536)
    symbols: int = Field(default=DEFAULT_SYMBOLS, ge=1, le=5000)
    seed: int = 7
    speed: float = Field(default=20.0, gt=0)
    scenario: str = "pump"
    with_ml: bool = True
    # manual: risk_manager holds every order for the owner (cdb approve / the console)
    approval: Literal["auto", "manual"] = "auto"
    approval_timeout_s: int = Field(default=60, ge=5, le=3600)
    health_timeout_s: float = Field(default=60.0, gt=0)
    stop_grace_s: float = Field(default=25.0, gt=0)
    extra_env: dict[str, str] = Field(default_factory=dict)

    def port(self, service: str) -> int:
        return DEFAULT_PORTS[service] + self.port_offset


class ServiceSpec(BaseModel):
    """One child process: how to start it, where it answers, what it reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    module: str
    port: int
    argv: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    optional: bool = False
    executable: tuple[str, ...] = ()  # a program that is not a cdb module (Prometheus, ...)
    health_path: str = "/health"  # anything else: HTTP 200 means ok

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.executable:
            return [*self.executable, *self.argv]
        return [*interpreter(self.name), "-m", self.module, *self.argv]


def module_available(module: str) -> bool:
    """Whether ``python -m <module>`` can run here (its package and ``__main__`` exist)."""
    try:
        return importlib.util.find_spec(f"{module}.__main__") is not None
    except ModuleNotFoundError:
        return False


def demo_plan(
    options: DemoOptions,
    stack_env: Mapping[str, str],
    *,
    available: Sequence[str] | None = None,
    service_env: Callable[[str], Mapping[str, str]] | None = None,
) -> list[ServiceSpec]:
    """The services to start, in start order; optional ones only when installed.
    ``service_env(name)`` (the stack's per-service Redis user) wins over ``stack_env``."""
    sim = f"127.0.0.1:{options.port('mexc_sim')}"
    shared = {
        "HTTP_HOST": "127.0.0.1",
        "CONSUMER_NAME": "demo",
        "MEXC_WS_URL": f"ws://{sim}/edge",
        "MEXC_REST_URL": f"http://{sim}",
        "BOT_REST_URL": f"http://127.0.0.1:{options.port('bot_rest')}",
        "TRADING_MODE": "paper",
        # bot_ws bounds frame times by our clock: mexc_sim's runs ``speed`` times faster
        # and starts a few seconds before bot_ws (two minutes of head start allowed)
        "FRAME_CLOCK_MAX_RATE": str(max(1.5, 2.5 * options.speed)),
        "FRAME_MAX_AHEAD_S": str(300 + 120 * options.speed),
        # a mexc_sim that lags (a busy machine) catches up in bursts of its faster time:
        # five seconds of our time behind is allowed
        "FRAME_MAX_JUMP_S": str(max(10.0, 5 * options.speed)),
        **options.extra_env,
    }
    specs: list[ServiceSpec] = []
    for name in START_ORDER:
        module = f"cdb.{name}"
        installed = module_available(module) if available is None else name in available
        if name in OPTIONAL and not (options.with_ml and installed):
            continue
        port = options.port(name)
        argv: tuple[str, ...] = ()
        own: dict[str, str] = {}
        if name == "risk_manager":
            own = {
                "RISK_APPROVAL": options.approval,
                "RISK_APPROVAL_TIMEOUT_S": str(options.approval_timeout_s),
            }
        if name == "mexc_sim":
            argv = (
                "--port",
                str(port),
                "--symbols",
                str(options.symbols),
                "--seed",
                str(options.seed),
                "--speed",
                str(options.speed),
                "--scenario",
                options.scenario,
                "--history-min",  # enough past bars for the advisor's warm-up (120)
                "150",
            )
        if name == "console":  # the owner's console shows every service started before it
            own = {
                "CONSOLE_SERVICES": ",".join(f"{spec.name}={spec.url}" for spec in specs),
                "CONSOLE_NOTIFIER_URL": f"http://127.0.0.1:{options.port('notifier')}",
            }
        specs.append(
            ServiceSpec(
                name=name,
                module=module,
                port=port,
                argv=argv,
                env={
                    **(service_env(name) if service_env is not None else stack_env),
                    **shared,
                    **own,
                    "HTTP_PORT": str(port),
                },
                optional=name in OPTIONAL,
            )
        )
    return specs
