"""Real processes for tests: a service run as ``python -m``, free loopback ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from cdb.demo.plan import interpreter
from tests.support.polling import eventually

ROOT = Path(__file__).resolve().parents[2]
# bot_ws against mexc_sim's faster clock: its rate, its head start, and the bursts in which
# a lagging simulator catches up (five seconds of our time at speed 60)
SIM_CLOCK = {"FRAME_CLOCK_MAX_RATE": "150", "FRAME_MAX_AHEAD_S": "7200", "FRAME_MAX_JUMP_S": "300"}


def free_port() -> int:
    """A loopback port free now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ProcessExited(Exception):
    """A process a test waits on is gone: no reason to wait any longer."""


class ServiceProcess:
    """``python -m <module>`` as a child process, with its log captured to a file."""

    def __init__(self, module: str, env: dict[str, str], log_dir: Path, port: int | None = None):
        self.module = module
        self.port = port or free_port()
        self.env = {**os.environ, **env, "HTTP_PORT": str(self.port), "HTTP_HOST": "127.0.0.1"}
        self.log_path = log_dir / f"{module.replace('.', '_')}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*interpreter(self.module.removeprefix("cdb.")), "-m", self.module],
            env=self.env,
            stdout=log,
            stderr=log,
            cwd=ROOT,
        )
        return self

    def wait_healthy(
        self, timeout: float = 30.0, accept: tuple[str, ...] = ("ok",)
    ) -> dict[str, Any]:
        """Its /health once the status is in ``accept``; fails at once with its log when
        the process has exited."""

        def healthy() -> dict[str, Any] | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ProcessExited(f"{self.module} exited {self.proc.returncode}:\n{self.log()}")
            reply: dict[str, Any] = httpx.get(f"{self.url}/health", timeout=1.0).json()
            assert reply.get("status") in accept, reply
            return reply

        try:
            return eventually(healthy, f"{self.module} healthy", timeout=timeout)
        except ProcessExited as exited:
            raise AssertionError(str(exited)) from None
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.log()}") from None

    def status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/status", timeout=2.0).json())

    def kill(self) -> None:
        """SIGKILL: no cleanup, no acknowledgement, as a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""

    def __enter__(self) -> ServiceProcess:
        """Starts it unless it runs already (``with start_console(...) as proc``): a
        second ``start()`` would leave the first process running, unstopped."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class SimProcess(ServiceProcess):
    """``python -m cdb.mexc_sim <flags>`` (its flags are its CLI, not the environment)."""

    def __init__(self, flags: list[str], log_dir: Path) -> None:
        super().__init__("cdb.mexc_sim", {}, log_dir)
        self.flags = flags

    def start(self) -> SimProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cdb.mexc_sim", "--port", str(self.port), *self.flags],
            env=self.env,
            stdout=log,
            stderr=log,
            cwd=ROOT,
        )
        return self

    def fault(self, **changes: Any) -> dict[str, Any]:
        reply = httpx.post(f"{self.url}/sim/faults", json=changes, timeout=5)
        reply.raise_for_status()
        return dict(reply.json())

    def sim_status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/sim/status", timeout=5).json())


def binary(name: str) -> str:
    """The path of an installed server binary (scripts/setup.d installs them)."""
    found = shutil.which(name)
    assert found, f"{name} is missing: run `make setup` (scripts/setup.d/)"
    return found


class Daemon:
    """A server binary (prometheus, alertmanager) as a child process, ready when
    ``ready_url`` answers 200."""

    def __init__(self, command: list[str], log: Path, ready_url: str) -> None:
        self.log = log
        self.ready_url = ready_url
        with log.open("ab") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=out)

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise ProcessExited(self.log.read_text()[-3000:])
            return httpx.get(self.ready_url, timeout=1).status_code == 200

        try:
            eventually(ready, self.ready_url, timeout=timeout, every=0.2)
        except ProcessExited as exited:
            raise AssertionError(f"exited: {exited}") from None
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.log.read_text()[-3000:]}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def free_block(size: int = 11) -> int:
    """A port offset whose 8000+offset … 8010+offset are all free now."""
    for offset in range(21_000, 40_000, 97):
        ports = [8000 + offset + i for i in range(size)]
        busy = False
        for port in ports:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    busy = True
                    break
        if not busy:
            return offset
    raise RuntimeError("no free block of ports")
