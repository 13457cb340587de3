"""No service imports what it does not use (issue 17, goal 3).

Each deployable service is started the way ``python -m cdb.<service>`` starts it, in a
fresh interpreter, up to the point where it would serve: its ``__main__`` runs (with the
runner's ``main`` replaced by one that only records the service class), then settings,
kernel, service object and HTTP app are built exactly as :func:`cdb.core.runner.serve`
builds them (uvicorn's config loaded, as its server does first), without connecting
anywhere or listening. What ``sys.modules`` holds then is what the
service carries all its life; the heavy libraries it has no use for must not be there.
The figures behind the list are in ``bench_footprint`` (import time and PSS per service).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cdb.demo.plan import KEEP_DOCSTRINGS, PYTHON_SERVICES, interpreter

# What no deployable service uses: the offline tools' libraries (reports, replay, the
# terminal dashboard), the HTTP stacks a library would bring besides httpx, and httpx's
# own command-line client (rich, pygments).
NEVER = (
    "aiohttp",
    "requests",
    "urllib3",
    "pywebpush",
    "rich",
    "pygments",
    "typer",
    "plotly",
    "kaleido",
    "pandas",
    "pyarrow",
    "textual",
    "psutil",
    "cdb.report",
    "cdb.replay",
    "cdb.view",
    "cdb.demo",
    "cdb.mexc_sim",
    "cdb.cli",
    "cdb.ml_advisor.training",
    "cdb.ml_advisor.report",
)
# What only some services use.
ONLY = {
    "jinja2": {"console"},
    "itsdangerous": {"console"},
    "websockets": {"bot_ws"},  # its MEXC client; uvicorn serves no WebSocket
    "numpy": {"ml_advisor"},
    "scipy": {"ml_advisor"},  # xgboost imports scipy.sparse unconditionally
    "xgboost": {"ml_advisor"},
    "apprise": set(),  # only once a NOTIFY_URLS channel is configured
    # the services with routes of their own; the others serve the kernel's endpoints
    # from Starlette alone
    "fastapi": {"bot_rest", "risk_manager", "execution_service", "notifier", "console"},
}
SERVICES = PYTHON_SERVICES

BUILD = """
import asyncio, json, runpy, sys

import cdb.core.runner as runner

found = {}
runner.main = lambda service_cls, settings_cls: found.update(cls=service_cls, settings=settings_cls)
runpy.run_module(f"cdb.{sys.argv[1]}.__main__", run_name="__main__")

from cdb.core.bus import Bus, connect_redis
from cdb.core.config import load_settings
from cdb.core.db import Database
from cdb.core.http import HttpState, create_app
from cdb.core.metrics import Health, ServiceMetrics
from cdb.core.service import Kernel


async def build() -> None:
    cls = found["cls"]
    settings = load_settings(found["settings"])
    health = Health(settings.stale_after_s, watches_input=cls.watches_input)
    metrics = ServiceMetrics(cls.name, health)
    state = HttpState(cls.name, health, metrics, dict)
    bus = Bus(connect_redis(settings), metrics=metrics, max_len=settings.bus_max_len)
    db = Database(settings, application_name=cls.name) if cls.uses_database else None
    kernel = Kernel(cls.name, bus, db, metrics, health, asyncio.Event())
    service = cls(settings, kernel)
    runner.http_server(create_app(state, service.router()), settings).config.load()
    await bus.close()


asyncio.run(build())
print(json.dumps({"optimize": sys.flags.optimize, "modules": sorted(sys.modules)}))
"""


def build(service: str, tmp_path: Path, python: list[str]) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "REDIS_PASSWORD": "never-used-nothing-connects",
        "VAPID_KEY_DIR": str(tmp_path / "vapid"),  # as in the demo: WebPush on
        "ML_MODEL_DIR": str(tmp_path / "models"),
    }
    return subprocess.run(
        [*python, "-c", BUILD, service],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )


def loaded_modules(service: str, tmp_path: Path) -> set[str]:
    """What the service holds, built under the interpreter flags it runs with."""
    done = build(service, tmp_path, interpreter(service))
    assert done.returncode == 0, done.stderr[-2000:]
    built = json.loads(done.stdout.strip().splitlines()[-1])
    assert built["optimize"] == (0 if service in KEEP_DOCSTRINGS else 2)
    return set(built["modules"])


def present(name: str, modules: set[str]) -> bool:
    return name in modules or any(module.startswith(f"{name}.") for module in modules)


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_only_what_it_uses(service: str, tmp_path: Path) -> None:
    modules = loaded_modules(service, tmp_path)
    assert f"cdb.{service}.service" in modules, "the service was really built"
    unwanted = [name for name in NEVER if present(name, modules)]
    unwanted += [
        name for name, users in ONLY.items() if service not in users and present(name, modules)
    ]
    assert unwanted == [], f"cdb.{service} imports what it does not use: {unwanted}"


@pytest.mark.parametrize("service", sorted(KEEP_DOCSTRINGS))
def test_a_service_kept_at_its_docstrings_needs_them(service: str, tmp_path: Path) -> None:
    """Each exception from ``-OO`` is still needed: once its library builds without
    docstrings, it leaves ``KEEP_DOCSTRINGS`` and saves its ~3 MiB too."""
    done = build(service, tmp_path, [sys.executable, "-OO"])
    assert done.returncode != 0, f"cdb.{service} now builds under -OO: drop it from KEEP_DOCSTRINGS"
    assert "__doc__" in done.stderr or "NoneType" in done.stderr, done.stderr[-2000:]
