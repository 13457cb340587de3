"""The trading pipeline for tests: its three services as real processes, and a
restartable Redis with AOF and the services' ACL users."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import redis

from cdb.core.acl import write_acl_file
from tests.support.credentials import acl_env, as_user
from tests.support.events import FAST_BUS
from tests.support.polling import eventually
from tests.support.processes import ServiceProcess, free_port

SERVICES = ("signal_engine", "risk_manager", "execution_service")


class Pipeline:
    """signal_engine, risk_manager and execution_service as child processes."""

    def __init__(self, env: dict[str, str], log_dir: Path, **extra: str) -> None:
        self.env = {**env, **FAST_BUS, **extra}
        self.log_dir = log_dir
        self.procs: dict[str, ServiceProcess] = {}

    def start(self, *names: str) -> Pipeline:
        for name in names or SERVICES:
            env = as_user({**self.env, "CONSUMER_NAME": f"{name}-0"}, name)
            port = self.procs[name].port if name in self.procs else None
            self.procs[name] = ServiceProcess(f"cdb.{name}", env, self.log_dir, port=port).start()
        for name in names or SERVICES:
            self.procs[name].wait_healthy(timeout=60, accept=("ok", "stale"))
        return self

    def kill(self, name: str) -> None:
        self.procs[name].kill()

    def restart(self, name: str) -> None:
        self.kill(name)
        self.start(name)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.__exit__()

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.log()[-3000:]}" for n, p in self.procs.items())


class RedisServer:
    """redis-server from the binary, AOF on (fsync always), restartable on the same port;
    its users (the admin and one per service) from an ACL file, no password in argv."""

    def __init__(self, data_dir: Path, password: str) -> None:
        self.data_dir = data_dir
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        acl_file = self.data_dir / "users.acl"
        write_acl_file(acl_file, {**acl_env(), "REDIS_PASSWORD": self.password})
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--aclfile",
                str(acl_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        eventually(
            lambda: redis.Redis(port=self.port, password=self.password).ping(),
            "redis-server started",
            timeout=20,
            every=0.05,
        )
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def env(self) -> dict[str, str]:
        return {
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(self.port),
            "REDIS_PASSWORD": self.password,
        }
