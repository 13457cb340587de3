"""``cdb demo``: the whole stack offline, in the seed's order, then the live view or a
headless run with a summary.

Ctrl-C (or SIGTERM) stops the services in reverse order and then Redis and PostgreSQL;
their data stays in the data directory unless ``--fresh`` wipes it on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import time
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console

from cdb.core.bus import Bus, connect_redis
from cdb.core.config import ServiceSettings
from cdb.core.db import apply_migrations
from cdb.core.events import Stream
from cdb.demo.model import ensure_demo_model_in_child
from cdb.demo.monitoring import monitoring_specs, notifier_env
from cdb.demo.plan import DemoOptions, ServiceSpec, demo_plan
from cdb.demo.progress import StartupDisplay
from cdb.demo.summary import DemoSummary, collect_summary, print_summary
from cdb.demo.supervisor import StartError, Supervisor
from cdb.localstack import LocalStack
from cdb.report.books import connect

__all__ = ["Demo", "run_demo", "wipe"]

WIPED = ("redis", "postgres", "logs")


def stack_settings(stack: LocalStack) -> ServiceSettings:
    """What the demo itself reads with: Redis as the read-only ``viewer`` user (the view and
    the signal count), PostgreSQL as ``cdb_user`` (the migrations, the books)."""
    env = stack.service_env("viewer")
    return ServiceSettings(
        redis_host=env["REDIS_HOST"],
        redis_port=int(env["REDIS_PORT"]),
        redis_username=env["REDIS_USERNAME"],
        redis_password=SecretStr(env["REDIS_PASSWORD"]),
        postgres_host=env["POSTGRES_HOST"],
        postgres_port=int(env["POSTGRES_PORT"]),
        postgres_db=env["POSTGRES_DB"],
        postgres_user=env["POSTGRES_USER"],
        postgres_password=SecretStr(env["POSTGRES_PASSWORD"]),
    )


def wipe(stack: LocalStack) -> list[Path]:
    """Stop the stack if it runs and delete its data (what ``--fresh`` does)."""
    stack.stop()
    removed = []
    for name in WIPED:
        path = stack.data_dir / name
        if path.exists():
            shutil.rmtree(path)
            removed.append(path)
    return removed


class Demo:
    """One demo run: the local stack, the services, and what they have done."""

    def __init__(self, options: DemoOptions, data_dir: Path, console: Console) -> None:
        self.options = options
        self.console = console
        self.stack = LocalStack(
            data_dir, redis_port=options.redis_port, postgres_port=options.postgres_port
        )
        self.settings: ServiceSettings | None = None
        self.supervisor: Supervisor | None = None
        self.started_at = time.monotonic()
        self.first_signal_s: float | None = None
        self._signal_cursor = "$"

    @property
    def data_dir(self) -> Path:
        return self.stack.data_dir

    @property
    def model_dir(self) -> Path:
        return self.data_dir / "models"

    def specs(self) -> list[ServiceSpec]:
        specs = demo_plan(self.options, self.stack.env(), service_env=self.stack.service_env)
        own = {
            "ml_advisor": {"ML_MODEL_DIR": str(self.model_dir)},
            "notifier": notifier_env(self.data_dir),
            "console": {
                "CONSOLE_PASSWORD_FILE": self._console_password_file(),
                "ADMIN_TOKEN": self.stack.admin_token,  # to subscribe browsers at the notifier
            },
        }
        specs = [
            spec.model_copy(update={"env": {**spec.env, **own[spec.name]}})
            if spec.name in own
            else spec
            for spec in specs
        ]
        token = self.stack.admin_token_path
        return specs + monitoring_specs(self.options, self.data_dir, specs, token)

    async def up(self, stop: asyncio.Event) -> None:
        """Redis + PostgreSQL, migrations, then every service healthy, in order."""
        self.started_at = time.monotonic()
        with StartupDisplay(self.console) as display:
            display.step("redis", f"127.0.0.1:{self.stack.redis_port}", "starting")
            display.step("postgres", f"127.0.0.1:{self.stack.postgres_port}", "starting")
            try:
                await asyncio.to_thread(self.stack.start)
                display.step("redis", f"127.0.0.1:{self.stack.redis_port}", "ok (ACL users, AOF)")
                self.settings = stack_settings(self.stack)
                probe = await connect(self.settings)  # fails within 5 s, unlike a hang
                await probe.close()
                applied = await apply_migrations(self.settings)
            except Exception as error:  # binaries missing, a port taken by something else, …
                raise StartError(
                    f"Redis/PostgreSQL in {self.data_dir}: {type(error).__name__}: {error}"
                ) from error
            display.step(
                "postgres",
                f"127.0.0.1:{self.stack.postgres_port}",
                f"ok (migrations: {', '.join(applied) or 'up to date'})",
            )
            self._signal_cursor = await self._stream_end(Stream.SIGNALS)
            if any(spec.name == "ml_advisor" for spec in self.specs()):
                display.step("ml model", str(self.model_dir), "looking")
                version, trained = await ensure_demo_model_in_child(self.model_dir)
                display.step(
                    "ml model",
                    str(self.model_dir),
                    f"{version} ({'trained on synthetic history' if trained else 'ok'})",
                )
            self.supervisor = Supervisor(
                self.specs(),
                self.data_dir / "logs",
                health_timeout_s=self.options.health_timeout_s,
                stop_grace_s=self.options.stop_grace_s,
                on_change=display.child,
            )
            for child in self.supervisor.children:
                display.child(child)
            await self.supervisor.start_all(stop)

    def _console_password_file(self) -> str:
        self.stack.console_password()  # generated once (mode 0600) before the console starts
        return str(self.stack.console_password_path)

    def console_address(self) -> str:
        """Where the owner's console answers and where its password is, for people."""
        return (
            f"console: http://127.0.0.1:{self.options.port('console')} (log in with the"
            f" password in {self.stack.console_password_path})"
        )

    def _bus(self) -> Bus:
        assert self.settings is not None
        return Bus(connect_redis(self.settings))

    async def _stream_end(self, stream: Stream) -> str:
        """The id of the stream's newest entry, so only later entries count."""
        bus = self._bus()
        try:
            return await bus.last_id(stream)
        finally:
            await bus.close()

    async def wait_first_signal(self, stop: asyncio.Event) -> float | None:
        """Seconds from start to the first new entry on ``cdb:signals`` (None if stopped)."""
        bus = self._bus()
        try:
            while not stop.is_set():
                if await bus.arrived_after(Stream.SIGNALS, self._signal_cursor, 500):
                    self.first_signal_s = time.monotonic() - self.started_at
                    return self.first_signal_s
        finally:
            await bus.close()
        return None

    async def down(self) -> None:
        """Services in reverse order, then Redis and PostgreSQL; the data stays."""
        if self.supervisor is not None:
            await self.supervisor.stop_all()
        await asyncio.to_thread(self.stack.stop)

    async def headless(self, stop: asyncio.Event, duration_s: float) -> DemoSummary:
        """Watch every service's health for ``duration_s``, then count the books."""
        assert self.supervisor is not None and self.settings is not None
        began = time.monotonic()
        watcher = asyncio.create_task(self.supervisor.watch(stop))
        first = asyncio.create_task(self.wait_first_signal(stop))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration_s)
        stop.set()
        await asyncio.gather(watcher, first)
        await self.supervisor.probe_all()  # the last word on each service, after the run
        return await collect_summary(
            self.settings,
            self.supervisor.children,
            time.monotonic() - began,
            self.first_signal_s,
        )

    async def interactive(self, stop: asyncio.Event) -> None:
        """The live terminal view until the user quits (q / Ctrl-C) or SIGTERM."""
        from cdb.view.app import DashboardApp
        from cdb.view.source import DashboardSource, SourceConfig

        assert self.supervisor is not None and self.settings is not None
        source = DashboardSource(
            SourceConfig.from_settings(
                self.settings,
                {
                    child.name: child.spec.url
                    for child in self.supervisor.children
                    if child.spec.health_path == "/health"  # cdb services, not Prometheus
                },
            )
        )
        app = DashboardApp(source)
        watcher = asyncio.create_task(self.supervisor.watch(stop, interval_s=2.0))
        stopper = asyncio.create_task(stop.wait())
        runner = asyncio.create_task(app.run_async())
        await asyncio.wait([runner, stopper], return_when=asyncio.FIRST_COMPLETED)
        if not runner.done():
            app.exit()
            await runner
        stop.set()
        stopper.cancel()
        await watcher
        await source.close()


async def run_demo(
    options: DemoOptions,
    data_dir: Path,
    *,
    fresh: bool = False,
    headless: bool = False,
    duration_s: float = 60.0,
    console: Console | None = None,
) -> int:
    """The ``cdb demo`` command; returns the exit code."""
    console = console or Console()
    demo = Demo(options, data_dir, console)
    if fresh:
        for path in await asyncio.to_thread(wipe, demo.stack):
            console.print(f"--fresh: removed {path}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = 1
    try:
        try:
            await demo.up(stop)
        except StartError as error:
            if stop.is_set():
                console.print("interrupted while starting")
                return 130
            console.print("[red]start-up failed:[/]")
            console.print(str(error), markup=False, highlight=False)
            return 1

        if stop.is_set():
            return 130
        console.print(demo.console_address(), highlight=False)
        if options.approval == "manual":
            console.print(
                f"approval mode: manual — every order waits {options.approval_timeout_s} s for"
                " you: on the console, or `cdb approvals`, `cdb approve ORDER_ID`,"
                " `cdb veto ORDER_ID --reason …`"
            )
        if headless:
            summary = await demo.headless(stop, duration_s)
            print_summary(console, summary)
            code = 0 if summary.ok else 1
        else:
            await demo.interactive(stop)
            code = 0
        return code
    finally:
        console.print("stopping: services, then Redis and PostgreSQL …")
        await demo.down()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        console.print(f"stopped; data kept in {demo.data_dir} (--fresh wipes it)")
