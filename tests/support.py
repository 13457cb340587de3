"""Helpers for tests that run services as real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
# bot_ws against a mexc_sim whose clock runs up to 60x ours, started a while before it
SIM_CLOCK = {"FRAME_CLOCK_MAX_RATE": "150", "FRAME_MAX_AHEAD_S": "7200"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def eventually(
    check: Callable[[], Any], what: str, timeout: float = 30.0, every: float = 0.1
) -> Any:
    """Call ``check`` until it returns something truthy (and return that); an
    AssertionError or HTTP error counts as not yet. Fails naming ``what`` and the last
    result after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (AssertionError, httpx.HTTPError, KeyError) as error:
            last = error
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last: {last!r}")


def sample_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` in Prometheus text whose labels include
    ``labels`` (0 when there is none), read with prometheus_client's own parser."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def scrape(url: str, name: str, **labels: str) -> float:
    """``sample_sum`` of ``url``/metrics."""
    return sample_sum(httpx.get(f"{url}/metrics", timeout=5).text, name, **labels)


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
            [sys.executable, "-m", self.module], env=self.env, stdout=log, stderr=log, cwd=ROOT
        )
        return self

    def wait_healthy(
        self, timeout: float = 30.0, accept: tuple[str, ...] = ("ok",)
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.module} exited {self.proc.returncode}:\n{self.log()}")
            try:
                reply = httpx.get(f"{self.url}/health", timeout=1.0)
                last = reply.json()
                if last.get("status") in accept:
                    return dict(last)
            except httpx.HTTPError as error:
                last = error
            time.sleep(0.1)
        raise AssertionError(f"{self.module} not healthy after {timeout}s ({last}):\n{self.log()}")

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
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
