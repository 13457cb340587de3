"""The chart's Redis container, run for real: its init container's command writes the ACL
file from the Secret's passwords, then its rendered command and arguments (no password in
them) start Debian's redis-server as UID 1000 on a read-only root; the password is
required, each service's user logs in with its own, AOF is on, and the rendered readiness
probe passes with the Secret's password and fails without it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.support import eventually, free_port
from tests.support.chart import find, helm_template
from tests.support.sandbox import sandboxed

PASSWORD = "chart-redis-test-password"


def kubelet_expand(arg: str, env: dict[str, str]) -> str:
    """$(VAR) references in command/args, as Kubernetes expands them."""
    return re.sub(r"\$\(([A-Z_][A-Z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), arg)


@pytest.fixture
def redis_pod(tmp_path: Path) -> dict[str, Any]:
    result = helm_template(crds=False)
    assert result.returncode == 0, result.stderr
    objects = [d for d in yaml.safe_load_all(result.stdout) if d]
    spec: dict[str, Any] = find(objects, "StatefulSet", "redis")["spec"]["template"]["spec"]
    return spec


@pytest.fixture
def redis_container(redis_pod: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = redis_pod["containers"][0]
    return container


def secret_value(key: str) -> str:
    """The Secret's value of ``key``, as this test fills the Secret."""
    return PASSWORD if key == "redis-password" else f"{key}-for-test"


def test_rendered_redis_runs_with_password_and_aof_as_uid_1000(
    redis_pod: dict[str, Any], redis_container: dict[str, Any], tmp_path: Path
) -> None:
    assert os.geteuid() == 0, "the read-only sandbox needs root for mount namespaces (CI is root)"
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: run `make setup`"
    root = tmp_path / "root"
    root.mkdir()
    env = {"REDIS_PASSWORD": PASSWORD}
    command = [str(c) for c in redis_container["command"]]
    args = [kubelet_expand(str(a), env) for a in redis_container["args"]]
    assert command == ["redis-server"]
    assert not any(PASSWORD in a or "PASSWORD" in a for a in args)  # nothing for `ps`
    (init,) = redis_pod["initContainers"]
    init_env = {e["name"]: secret_value(e["valueFrom"]["secretKeyRef"]["key"]) for e in init["env"]}
    assert init["command"][:3] == ["python", "-m", "cdb.core.acl"]
    # The claim is mounted at /data in the pod; in the sandbox only /tmp is writable.
    args[args.index("--dir") + 1] = "/tmp/data"
    port = free_port()
    log = (tmp_path / "redis.log").open("wb")
    # the init container, then Redis, in one sandbox sharing its /tmp (the pod's emptyDir)
    script = 'mkdir /tmp/data && "$PY" -m cdb.core.acl "$ACL" && exec "$@"'
    proc = subprocess.Popen(
        sandboxed(root, "sh", "-c", script, "redis", binary, *args,
                  "--port", str(port), "--bind", "127.0.0.1"),
        stdout=log, stderr=log,
        env={**os.environ, **init_env, "PY": sys.executable, "ACL": str(init["command"][3]),
             "HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    try:
        client = redis.Redis(port=port, password=PASSWORD)

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError((tmp_path / "redis.log").read_text())
            return bool(client.ping())

        eventually(up, "redis-server answering PING", timeout=30, every=0.05)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        service = redis.Redis(
            port=port, username="risk_manager", password=secret_value("risk_manager-password")
        )
        service.xadd("cdb:orders", {"event": "{}"})  # its own stream
        with pytest.raises(redis.exceptions.NoPermissionError):
            service.xadd("cdb:control", {"event": "{}"})
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("dir") == {"dir": "/tmp/data"}
        client.xadd("cdb:signals", {"event": "{}"})
        persistence = client.info("persistence")
        assert persistence["aof_enabled"] == 1
        assert persistence["aof_last_write_status"] == "ok"
        status = Path(f"/proc/{proc.pid}/status").read_text()
        uid = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid.split()[1:] == ["1000"] * 4, uid

        probe = redis_container["readinessProbe"]["exec"]["command"]
        script = str(probe[2]).replace("127.0.0.1", f"127.0.0.1 -p {port}")
        good = subprocess.run([probe[0], probe[1], script], env={**os.environ,
                              "REDISCLI_AUTH": PASSWORD}, check=False)  # fmt: skip
        bad = subprocess.run([probe[0], probe[1], script], env={**os.environ,
                             "REDISCLI_AUTH": "wrong"}, check=False)  # fmt: skip
        assert good.returncode == 0 and bad.returncode != 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        log.close()
