"""A small asyncio process supervisor: start in order, wait for health, watch, stop gently.

Each child runs in its own session (so a Ctrl-C in the terminal reaches only the demo,
which then stops the children in reverse start order: SIGTERM, wait up to the grace
period, then SIGKILL), and gets SIGTERM from the kernel if the demo itself is killed.
Readiness is each child's own ``/health`` answering ``ok``; the
wait between two probes is a wait on the child's exit, so a crash ends it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cdb.core.probe import probe_health
from cdb.demo.plan import ServiceSpec

__all__ = ["Child", "StartError", "Supervisor"]

PROBE_INTERVAL_S = 0.1
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when the demo dies, even by SIGKILL,
    so a killed demo leaves no orphaned services behind."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


Progress = Callable[["Child"], None]


class StartError(RuntimeError):
    """A child exited or never became healthy; the message carries its log's tail."""


@dataclass
class Child:
    """A supervised process and what the supervisor has seen of it."""

    spec: ServiceSpec
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    state: str = "waiting"
    started_at: float | None = None
    healthy_at: float | None = None
    probes: int = 0
    bad_probes: list[str] = field(default_factory=list)
    exit_code: int | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def startup_s(self) -> float | None:
        if self.started_at is None or self.healthy_at is None:
            return None
        return self.healthy_at - self.started_at

    def log_tail(self, limit: int = 3000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-limit:]

    @property
    def stayed_healthy(self) -> bool:
        return self.healthy_at is not None and not self.bad_probes and self.exit_code is None


class Supervisor:
    """Starts the given services in order and owns them until :meth:`stop_all`."""

    def __init__(
        self,
        specs: Sequence[ServiceSpec],
        log_dir: Path,
        *,
        health_timeout_s: float = 60.0,
        stop_grace_s: float = 25.0,
        on_change: Progress | None = None,
    ) -> None:
        self.children = [Child(spec, log_dir / f"{spec.name}.log") for spec in specs]
        self.log_dir = log_dir
        self.health_timeout_s = health_timeout_s
        self.stop_grace_s = stop_grace_s
        self.on_change = on_change or (lambda child: None)
        self.client = httpx.AsyncClient()

    def _set(self, child: Child, state: str) -> None:
        child.state = state
        self.on_change(child)

    async def start_all(self, stop: asyncio.Event | None = None) -> None:
        """Start each child and wait for its health before the next; raise on failure."""
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for child in self.children:
            if stop is not None and stop.is_set():
                raise StartError("interrupted while starting")
            await self._start(child)
            await self._wait_healthy(child, stop)

    async def _start(self, child: Child) -> None:
        # the log is the owner's alone (it may name symbols, orders, hosts): mode 0600
        descriptor = os.open(child.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(descriptor, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting ---\n".encode())
            child.process = await asyncio.create_subprocess_exec(
                *child.spec.command(),
                env={**os.environ, **child.spec.env},
                stdout=log,
                stderr=log,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        child.started_at = time.monotonic()
        self._set(child, "starting")

    async def _wait_healthy(self, child: Child, stop: asyncio.Event | None) -> None:
        assert child.process is not None
        deadline = time.monotonic() + self.health_timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                raise StartError("interrupted while starting")
            last = await probe_health(self.client, child.spec.url, child.spec.health_path)
            if last == "ok":
                child.healthy_at = time.monotonic()
                self._set(child, "ok")
                return
            if last != child.state and not last.startswith("unreachable"):
                self._set(child, last)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.process.wait(), PROBE_INTERVAL_S)
            if child.process.returncode is not None:
                child.exit_code = child.process.returncode
                self._set(child, f"exited {child.exit_code}")
                raise StartError(
                    f"{child.name} exited with code {child.exit_code} while starting "
                    f"(log: {child.log_path}):\n{child.log_tail()}"
                )
        self._set(child, "failed")
        raise StartError(
            f"{child.name} not healthy within {self.health_timeout_s:.0f}s (last: {last}; "
            f"log: {child.log_path}):\n{child.log_tail()}"
        )

    async def probe_all(self) -> dict[str, str]:
        """One health probe of every child; anything but ``ok`` is recorded against it."""
        states = await asyncio.gather(*(self._probe(child) for child in self.children))
        return {child.name: state for child, state in zip(self.children, states, strict=True)}

    async def _probe(self, child: Child) -> str:
        if child.process is not None and child.process.returncode is not None:
            child.exit_code = child.process.returncode
            state = f"exited {child.exit_code}"
        else:
            state = await probe_health(self.client, child.spec.url, child.spec.health_path)
        child.probes += 1
        if state != "ok":
            child.bad_probes.append(state)
        if state != child.state:
            self._set(child, state)
        return state

    async def watch(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        """Probe every child each ``interval_s`` until ``stop`` is set."""
        while not stop.is_set():
            await self.probe_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    async def stop_all(self) -> dict[str, int | None]:
        """Stop children in reverse start order: SIGTERM, wait, then SIGKILL."""
        codes: dict[str, int | None] = {}
        for child in reversed(self.children):
            codes[child.name] = await self._stop(child)
        await self.client.aclose()
        return codes

    async def _stop(self, child: Child) -> int | None:
        process = child.process
        if process is None:
            return None
        if process.returncode is not None:  # it had exited already: keep what it showed
            child.exit_code = process.returncode
            return process.returncode
        self._set(child, "stopping")
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.stop_grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            self._set(child, "killed")
            return process.returncode
        self._set(child, f"stopped ({process.returncode})")
        return process.returncode
