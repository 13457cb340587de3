"""The container image: its policy, its build context, and the image built for real.

* checkov's Dockerfile policies pass (zero failed checks) and the Dockerfile keeps the
  contract (python:3.11-slim, botuser UID 1000, uv.lock frozen, no dev deps, no secret).
* The build context, as the real Docker engine cuts it with .dockerignore, holds exactly
  what the image needs and none of .venv, .tools, .cdb, .git.
* The image builds offline (``--network none``) from wheelhouse/ on a stand-in for
  python:3.11-slim made from Debian packages (tests/support/containers.py); it runs as botuser
  with nothing secret inside and holds exactly uv.lock's runtime set, no dev tools, and
  the bytecode of every module a service loads under the flags it runs with (-OO).
  (test_image_stack.py runs every service from it with the chart's hardening.)
* The services run as UID/GID 1000 on a read-only root filesystem with a writable /tmp
  only: the real ``python -m cdb.<service>`` in a mount namespace whose every mount is
  read-only, against the harness's Redis and PostgreSQL, until /health says ok.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from cdb.demo.plan import KEEP_DOCSTRINGS, OPTIMIZED, interpreter
from tests.support import ROOT, ServiceProcess
from tests.support.containers import BuiltImage, Docker
from tests.support.sandbox import sandboxed

DOCKERFILE = ROOT / "Dockerfile"
CHECKOV = ROOT / ".tools" / "bin" / "checkov"


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    parsed = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            parsed.append((keyword.upper(), rest.strip()))
    return parsed


def test_checkov_dockerfile_policies_pass() -> None:
    assert CHECKOV.exists(), "checkov is missing: run `make setup`"
    result = subprocess.run(
        [str(CHECKOV), "-f", str(DOCKERFILE), "--framework", "dockerfile", "--skip-download",
         "-o", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert report["summary"]["failed"] == 0, report["results"].get("failed_checks")
    assert report["summary"]["passed"] >= 20, report["summary"]
    assert result.returncode == 0


def test_dockerfile_keeps_the_image_contract() -> None:
    steps = instructions()
    # Users get python:3.11-slim; the one build argument only swaps the base.
    assert [rest for kind, rest in steps if kind == "ARG"] == [
        "PYTHON_IMAGE=python",
        "PYTHON_TAG=3.11-slim",
        'CDB_EXTRAS=""',
    ]
    bases = [rest.split()[0] for kind, rest in steps if kind == "FROM"]
    assert bases == ["${PYTHON_IMAGE}:${PYTHON_TAG}"] * 2
    runs = " ".join(rest for kind, rest in steps if kind == "RUN")
    assert "uv export --frozen --no-dev" in runs
    assert "uv pip sync --require-hashes" in runs
    assert "pip install" in runs and "/wheelhouse" in runs
    assert re.search(r"useradd --uid 1000 --gid 1000 .*botuser", runs)
    copies = [rest for kind, rest in steps if kind == "COPY"]
    for source in ("uv.lock", "services/", "operator/", "migrations/"):
        assert any(source in c.split() for c in copies), f"{source} is not copied"
    env = " ".join(rest for kind, rest in steps if kind == "ENV")
    assert "CDB_MIGRATIONS_DIR=/app/migrations" in env
    final_stage = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM") :]
    users = [rest for kind, rest in final_stage if kind == "USER"]
    assert users == ["1000:1000"], "the final stage runs as botuser"
    for kind, rest in steps:
        if kind in ("ENV", "LABEL"):
            assert not re.search(r"(PASSWORD|SECRET|API_KEY|TOKEN)\s*=", rest, re.I), rest


# --- the build context, cut by the real Docker engine --------------------------------


def test_build_context_holds_only_what_the_image_needs(
    docker_engine: Docker, tmp_path: Path
) -> None:
    probe = "FROM scratch\nCOPY . /context/\n"
    build = subprocess.run(
        ["docker", "build", "-q", "-t", "cdb-context-probe", "-f", "-", str(ROOT)],
        input=probe, env=docker_engine.env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    created = subprocess.run(
        ["docker", "create", "cdb-context-probe", "/none"],
        env=docker_engine.env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    archive = tmp_path / "context.tar"
    with archive.open("wb") as out:
        subprocess.run(["docker", "export", created], env=docker_engine.env, stdout=out, check=True)
    with tarfile.open(archive) as tar:
        names = {m.name.removeprefix("context/") for m in tar if m.name.startswith("context/")}
    top = {name.split("/")[0] for name in names if name}
    assert top == {"pyproject.toml", "uv.lock", "README.md", "services", "operator", "migrations",
                   "wheelhouse"}  # fmt: skip
    for needed in ("services/cdb/core/runner.py", "operator/cdb_operator/__main__.py",
                   "migrations/0001_initial.sql"):  # fmt: skip
        assert needed in names, needed
    for banned in (".venv", ".tools", ".cdb", ".git", "__pycache__", ".env"):
        assert not [n for n in names if banned in n.split("/")], f"{banned} in the build context"


# --- read-only root as UID 1000 -------------------------------------------------------


class ReadOnlyRootService(ServiceProcess):
    """``python -m <module>`` as the image runs it: UID 1000, read-only root, /tmp only."""

    def __init__(self, module: str, env: dict[str, str], log_dir: Path, root: Path) -> None:
        super().__init__(module, env, log_dir)
        self.root = root
        self.env.update(HOME="/tmp", PYTHONDONTWRITEBYTECODE="1",
                        CDB_MIGRATIONS_DIR=str(ROOT / "migrations"))  # fmt: skip

    def start(self) -> ReadOnlyRootService:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            sandboxed(self.root, sys.executable, "-m", self.module),
            env=self.env, stdout=log, stderr=log, cwd="/",
        )  # fmt: skip
        return self


@pytest.fixture
def sandbox_root(tmp_path: Path) -> Path:
    assert os.geteuid() == 0, "the read-only sandbox needs root for mount namespaces (CI is root)"
    assert shutil.which("unshare") and shutil.which("setpriv"), "util-linux is missing"
    root = tmp_path / "root"
    root.mkdir()
    return root


def test_the_sandbox_is_read_only_and_unprivileged(sandbox_root: Path) -> None:
    probe = (
        "id -u; id -g; touch /tmp/ok && echo tmp-writable; "
        f"touch {ROOT}/write-probe 2>/dev/null && echo root-writable || echo root-read-only; "
        "touch /etc/write-probe 2>/dev/null && echo etc-writable || echo etc-read-only"
    )
    result = subprocess.run(
        sandboxed(sandbox_root, "sh", "-c", probe), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1000", "1000", "tmp-writable", "root-read-only",
                                     "etc-read-only"]  # fmt: skip
    assert not (ROOT / "write-probe").exists()


@pytest.mark.parametrize(
    "module", ["cdb.signal_engine", "cdb.risk_manager", "cdb.execution_service"]
)
def test_service_runs_as_uid_1000_on_a_read_only_root(
    module: str, service_env: dict[str, str], sandbox_root: Path, tmp_path: Path
) -> None:
    with ReadOnlyRootService(module, service_env, tmp_path, sandbox_root) as service:
        health: dict[str, Any] = service.wait_healthy(timeout=90)
        assert health["status"] == "ok"
        assert service.proc is not None
        status = Path(f"/proc/{service.proc.pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == ["1000"] * 4, uid_line
        assert service.terminate() == 0, service.log()


def test_the_locked_runtime_set_has_the_services_deps_and_no_dev_tools() -> None:
    """What `uv sync --frozen --no-dev` installs, read from uv.lock by uv itself."""
    uv = ROOT / ".tools" / "bin" / "uv"
    assert uv.exists(), "uv is missing: run `make setup`"
    result = subprocess.run(
        [str(uv), "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project"],
        capture_output=True, text=True, cwd=ROOT, check=False,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    packages = {line.split("==")[0].lower() for line in result.stdout.splitlines() if "==" in line}
    assert {"fastapi", "uvicorn", "redis", "psycopg", "yoyo-migrations", "kopf",
            "prometheus-client", "websockets"} <= packages  # fmt: skip
    assert not packages & {"pytest", "ruff", "mypy", "hypothesis", "kmock", "import-linter"}


# --- the image, built for real (offline, on the Debian stand-in for python:3.11-slim) ---


def locked_runtime_set() -> dict[str, tuple[str, bool]]:
    """name -> (version, has an environment marker) of `uv export --frozen --no-dev`."""
    result = subprocess.run(
        [str(ROOT / ".tools" / "bin" / "uv"), "export", "--frozen", "--no-dev", "--no-hashes",
         "--no-emit-project", "--no-annotate", "--no-header"],
        capture_output=True, text=True, cwd=ROOT, check=True,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_OFFLINE": "1"},
    )  # fmt: skip
    locked = {}
    for line in result.stdout.splitlines():
        if "==" in line:
            requirement, _, marker = line.partition(";")
            name, _, version = requirement.strip().partition("==")
            locked[name.lower().replace("_", "-")] = (version, bool(marker.strip()))
    return locked


def test_the_image_builds_offline_as_botuser_with_nothing_secret(
    cdb_image: BuiltImage, docker_engine: Docker, record_property: Any
) -> None:
    record_property("image_size_mb", round(cdb_image.size_bytes / 1e6))
    record_property("image_build_s", round(cdb_image.build_seconds))
    assert "Looking in links: /wheelhouse" in cdb_image.log  # pip took uv from the wheelhouse
    config = docker_engine.inspect_image(cdb_image.tag)["Config"]
    assert config["User"] == "1000:1000"
    assert "CDB_MIGRATIONS_DIR=/app/migrations" in config["Env"]
    for variable in config["Env"]:
        assert not re.search(r"(PASSWORD|SECRET|API_KEY|TOKEN)", variable.split("=")[0], re.I)
    listing = docker_engine("run", "--rm", "--entrypoint", "sh", cdb_image.tag, "-c",
                            "ls -A /app; ls -A /wheelhouse 2>&1 | head -1").stdout  # fmt: skip
    assert listing.split()[:3] == [".venv", "migrations", "ls:"], listing  # no wheelhouse left


def test_the_image_holds_exactly_the_locked_runtime_set(
    cdb_image: BuiltImage, docker_engine: Docker
) -> None:
    probe = (
        "import importlib.metadata as m, json; print(json.dumps("
        "{d.metadata['Name'].lower().replace('_', '-'): d.version for d in m.distributions()}))"
    )
    installed = json.loads(
        docker_engine("run", "--rm", cdb_image.tag, "python", "-c", probe).stdout
    )
    assert installed.pop("claire-de-binare") == "0.1.0"
    locked = locked_runtime_set()
    assert {name: locked[name][0] for name in installed if name in locked} == installed
    assert not set(installed) - set(locked), "installed but not locked"
    unconditional = {name for name, (_, marker) in locked.items() if not marker}
    assert unconditional <= set(installed), unconditional - set(installed)
    assert not set(installed) & {"pytest", "ruff", "mypy", "hypothesis", "kmock", "uv"}
    # The offline tools (pyproject's `tools` extra) stay out of the service image.
    assert not set(installed) & {"pandas", "pyarrow", "plotly", "kaleido", "textual", "psutil"}


def test_the_image_default_command_runs_hardened(
    cdb_image: BuiltImage, docker_engine: Docker
) -> None:
    result = docker_engine(
        "run", "--rm", "--read-only", "--user", "1000:1000", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--tmpfs", "/tmp:uid=1000,gid=1000",
        cdb_image.tag,
    )  # fmt: skip
    assert "Usage" in result.stdout and "demo" in result.stdout, result.stdout


def test_every_module_a_service_loads_is_compiled_for_its_flags_in_the_image(
    cdb_image: BuiltImage, docker_engine: Docker
) -> None:
    """The services run with -OO on a read-only root (the chart's commands): each module
    they load, the interpreter's own too, has its bytecode in the image, so nothing is
    compiled in memory at a start. Without the Dockerfile's compileall most are missing."""
    probe = (
        "import importlib, importlib.util, json, os, sys\n"
        "for name in sys.argv[1:]: importlib.import_module(f'cdb.{name}.service')\n"
        "importlib.import_module('uvicorn')\n"
        "files = [getattr(m, '__file__', None) or '' for m in list(sys.modules.values())]\n"
        "missing = [f for f in files if f.endswith('.py')"
        " and not os.path.exists(importlib.util.cache_from_source(f))]\n"
        "print(json.dumps({'optimize': sys.flags.optimize, 'loaded': len(files),"
        " 'missing': missing}))"
    )
    for name in sorted({*OPTIMIZED, *KEEP_DOCSTRINGS}):
        flags = interpreter(name)[1:]
        result = docker_engine(
            "run", "--rm", "--read-only", "--user", "1000:1000", "--cap-drop", "ALL",
            "--tmpfs", "/tmp:uid=1000,gid=1000", cdb_image.tag,
            "python", *flags, "-c", probe, name,
        )  # fmt: skip
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["optimize"] == (2 if flags else 0), name
        assert report["loaded"] > 300, report  # the service's whole import graph
        missing = report["missing"]
        assert missing == [], f"cdb.{name} compiles {len(missing)} in memory: {missing[:5]}"
