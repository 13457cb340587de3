"""``cdb demo``: the start plan, the supervisor on real service processes, and the whole
stack headless end to end.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdb.demo.plan import DEFAULT_PORTS, DemoOptions, ServiceSpec, demo_plan
from cdb.demo.supervisor import StartError, Supervisor
from cdb.localstack import LocalPostgres
from tests.support import ROOT, free_port

STACK = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": "1", "REDIS_PASSWORD": "x"}


def test_plan_follows_the_seed_order_with_offset_ports() -> None:
    options = DemoOptions(port_offset=100, symbols=12, seed=3)
    every = ("mexc_sim", "bot_rest", "bot_ws", "signal_engine", "risk_manager",
             "execution_service", "notifier", "ml_advisor", "console")  # fmt: skip
    plan = demo_plan(options, STACK, available=every)
    assert [s.name for s in plan] == list(every)
    assert [s.port for s in plan] == [DEFAULT_PORTS[name] + 100 for name in every]
    sim = plan[0]
    assert sim.argv == ("--port", "8110", "--symbols", "12", "--seed", "3", "--speed", "20.0",
                        "--scenario", "pump", "--history-min", "150")  # fmt: skip
    for spec in plan:
        assert spec.env["HTTP_PORT"] == str(spec.port)
        assert spec.env["MEXC_WS_URL"] == "ws://127.0.0.1:8110/edge"
        assert spec.env["MEXC_REST_URL"] == "http://127.0.0.1:8110"
        assert spec.env["BOT_REST_URL"] == "http://127.0.0.1:8104"
        assert spec.env["TRADING_MODE"] == "paper"
        assert spec.env["REDIS_PASSWORD"] == "x"
    console = plan[-1]
    assert console.env["CONSOLE_SERVICES"].split(",") == [
        f"{s.name}={s.url}" for s in plan[:-1]
    ]  # the console shows the health of every service started before it
    assert console.env["CONSOLE_NOTIFIER_URL"] == "http://127.0.0.1:8106"


def test_the_approval_mode_reaches_risk_manager_only() -> None:
    every = ("mexc_sim", "signal_engine", "risk_manager", "execution_service")
    auto = {s.name: s.env for s in demo_plan(DemoOptions(), STACK, available=every)}
    assert auto["risk_manager"]["RISK_APPROVAL"] == "auto"
    manual = DemoOptions(approval="manual", approval_timeout_s=120)
    plan = {s.name: s.env for s in demo_plan(manual, STACK, available=every)}
    assert plan["risk_manager"]["RISK_APPROVAL"] == "manual"
    assert plan["risk_manager"]["RISK_APPROVAL_TIMEOUT_S"] == "120"
    assert "RISK_APPROVAL" not in plan["execution_service"]
    options = DemoOptions.model_fields
    assert options["approval"].default == "auto" and options["approval_timeout_s"].default == 60


def test_the_demo_command_takes_the_approval_mode_from_its_option_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from cdb import cli
    from cdb.demo import run

    seen: list[DemoOptions] = []

    async def fake_run(options: DemoOptions, *args: object, **kwargs: object) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr(run, "run_demo", fake_run)
    runner = CliRunner()
    assert runner.invoke(cli.app, ["demo", "--approval", "manual"]).exit_code == 0
    assert (
        runner.invoke(
            cli.app, ["demo"], env={"RISK_APPROVAL": "manual", "RISK_APPROVAL_TIMEOUT_S": "30"}
        ).exit_code
        == 0
    )
    assert runner.invoke(cli.app, ["demo"], env={"RISK_APPROVAL": ""}).exit_code == 0
    bad = runner.invoke(cli.app, ["demo", "--approval", "sometimes"])
    assert bad.exit_code == 2 and "auto or manual" in bad.output
    assert [(o.approval, o.approval_timeout_s) for o in seen] == [
        ("manual", 60), ("manual", 30), ("auto", 60)
    ]  # fmt: skip


def test_plan_leaves_out_an_absent_or_unwanted_ml_advisor() -> None:
    core = ("mexc_sim", "bot_rest", "bot_ws", "signal_engine", "risk_manager",
            "execution_service", "notifier", "console")  # fmt: skip
    assert [s.name for s in demo_plan(DemoOptions(), STACK, available=core)] == list(core)
    with_ml = (*core, "ml_advisor")
    plan = demo_plan(DemoOptions(with_ml=False), STACK, available=with_ml)
    assert "ml_advisor" not in [s.name for s in plan]


def spec(name: str, env: dict[str, str], **extra: str) -> ServiceSpec:
    port = free_port()
    return ServiceSpec(
        name=name,
        module=f"cdb.{name}",
        port=port,
        env={**env, "HTTP_PORT": str(port), "HTTP_HOST": "127.0.0.1", **extra},
    )


async def test_supervisor_starts_in_order_watches_and_stops_gracefully(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    specs = [spec("signal_engine", service_env), spec("risk_manager", service_env)]
    seen: list[tuple[str, str]] = []
    supervisor = Supervisor(
        specs, tmp_path / "logs", on_change=lambda c: seen.append((c.name, c.state))
    )
    try:
        await supervisor.start_all()
        first, second = supervisor.children
        assert first.state == second.state == "ok"
        # the second child was started only after the first answered ok
        assert seen.index(("signal_engine", "ok")) < seen.index(("risk_manager", "starting"))
        assert await supervisor.probe_all() == {"signal_engine": "ok", "risk_manager": "ok"}
        before = [child.probes for child in supervisor.children]
        stop = asyncio.Event()
        watcher = asyncio.create_task(supervisor.watch(stop, interval_s=0.2))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
            child.probes < seen_before + 3
            for child, seen_before in zip(supervisor.children, before, strict=True)
        ):
            await asyncio.sleep(0.1)
        stop.set()
        await watcher
        # the watcher kept probing (three rounds at least), and every probe was ok
        assert all(
            child.stayed_healthy and child.probes >= seen_before + 3
            for child, seen_before in zip(supervisor.children, before, strict=True)
        ), [(c.name, c.probes, c.bad_probes) for c in supervisor.children]
    finally:
        codes = await supervisor.stop_all()
    # SIGTERM drains and exits 0, in reverse start order
    assert list(codes.items()) == [("risk_manager", 0), ("signal_engine", 0)]
    assert (tmp_path / "logs" / "signal_engine.log").stat().st_size > 0


async def test_supervisor_reports_a_child_that_cannot_start(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    bad = spec("signal_engine", service_env, SIGNAL_THRESHOLD_PCT="-1")
    supervisor = Supervisor([bad], tmp_path / "logs")
    try:
        with pytest.raises(StartError) as failure:
            await supervisor.start_all()
    finally:
        await supervisor.stop_all()
    assert "signal_engine exited with code 2" in str(failure.value)
    assert "SIGNAL_THRESHOLD_PCT" in str(failure.value)  # the child's own one-line message
    assert supervisor.children[0].state == "exited 2"


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


async def count(settings_port: int, data_dir: Path) -> dict[str, int]:
    from cdb.core.config import PostgresSettings
    from cdb.report.books import connect, count_rows

    password = LocalPostgres(data_dir / "postgres", settings_port).password
    conn = await connect(PostgresSettings(postgres_port=settings_port, postgres_password=password))
    try:
        return await count_rows(conn)
    finally:
        await conn.close()


@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_headless_demo_runs_the_whole_stack_and_keeps_the_books(tmp_path: Path) -> None:
    data_dir = tmp_path / "cdb"
    redis_port, postgres_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "cdb.cli", "demo", "--headless", "--duration", "30",
        "--data-dir", str(data_dir), "--port-offset", str(free_block()),
        "--redis-port", str(redis_port), "--postgres-port", str(postgres_port),
        "--speed", "30",
    ]  # fmt: skip
    env = {**os.environ, "COLUMNS": "200"}
    run = await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "every service stayed healthy" in output, output
    for name in ("mexc_sim", "bot_rest", "bot_ws", "signal_engine", "risk_manager",
                 "execution_service"):  # fmt: skip
        assert re.search(rf"\b{name}\b[^\n]*healthy throughout", output), output
        assert (data_dir / "logs" / f"{name}.log").exists()
    assert "stopped; data kept in" in output
    password = data_dir / "console.password"
    assert "console: http://127.0.0.1:" in output and str(password) in output, output
    assert password.stat().st_mode & 0o777 == 0o600
    assert re.search(r"\bconsole\b[^\n]*healthy throughout", output), output

    # the data survived the stop: start only PostgreSQL from the data directory and count
    postgres = LocalPostgres(data_dir / "postgres", postgres_port)
    await asyncio.to_thread(postgres.start)
    try:
        counts = await count(postgres_port, data_dir)
    finally:
        await asyncio.to_thread(postgres.stop)
    assert counts["signals"] > 0, counts
    assert counts["orders"] > 0, counts
    assert counts["fills"] > 0, counts


@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_status_while_running_then_sigterm_stops_everything_and_keeps_data(
    tmp_path: Path,
) -> None:
    from cdb.demo.status import gather_status

    data_dir = tmp_path / "cdb"
    offset, redis_port, postgres_port = free_block(), free_port(), free_port()
    expected = demo_plan(DemoOptions(), STACK)  # ml_advisor too when it is installed
    command = [
        sys.executable, "-m", "cdb.cli", "demo", "--headless", "--duration", "600",
        "--data-dir", str(data_dir), "--port-offset", str(offset),
        "--redis-port", str(redis_port), "--postgres-port", str(postgres_port),
    ]  # fmt: skip
    log = (tmp_path / "demo.out").open("w+")
    demo = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:

        async def all_ok() -> bool:
            assert demo.poll() is None, (tmp_path / "demo.out").read_text()
            reports = await gather_status(offset)
            return len(reports) == len(expected) and all(r.ok for r in reports)

        deadline = asyncio.get_running_loop().time() + 180
        while not await all_ok():
            assert asyncio.get_running_loop().time() < deadline, "stack never became healthy"
            await asyncio.sleep(0.5)

        status = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "cdb.cli", "status", "--port-offset", str(offset), "--json"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        assert '"signal_threshold_pct": 3.0' in status.stdout  # config in force
        assert "password" not in status.stdout.lower()

        # wait until the stack traded on paper: fills in its (running) PostgreSQL
        while (await count(postgres_port, data_dir)).get("fills", 0) == 0:
            assert asyncio.get_running_loop().time() < deadline, "no fills"
            assert demo.poll() is None
            await asyncio.sleep(1.0)
        demo.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(demo.wait, 120)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    output = (tmp_path / "demo.out").read_text()
    assert code == 0, output
    assert "every service stayed healthy" in output and "data kept in" in output
    for name in ("bot_ws", "signal_engine", "execution_service"):
        with socket.socket() as sock:  # every service is gone
            assert sock.connect_ex(("127.0.0.1", DEFAULT_PORTS[name] + offset)) != 0
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", postgres_port)) != 0
    postgres = LocalPostgres(data_dir / "postgres", postgres_port)
    await asyncio.to_thread(postgres.start)
    try:
        assert (await count(postgres_port, data_dir))["fills"] > 0  # the books survived
    finally:
        await asyncio.to_thread(postgres.stop)


PARENT = """
import asyncio, json, sys
from cdb.demo.plan import ServiceSpec
from cdb.demo.supervisor import Supervisor

async def main():
    spec = ServiceSpec.model_validate_json(sys.argv[1])
    supervisor = Supervisor([spec], __import__("pathlib").Path(sys.argv[2]))
    await supervisor.start_all()
    print(supervisor.children[0].process.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def process_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return "Z"


async def test_a_killed_supervisor_leaves_no_orphans(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    child_spec = spec("signal_engine", service_env)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, child_spec.model_dump_json(), str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    line = await asyncio.to_thread(parent.stdout.readline)
    child = int(line)
    os.kill(child, 0)  # running
    parent.kill()  # SIGKILL: the supervisor gets no chance to stop anything
    parent.wait()
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if process_state(child) == "Z":  # exited, not yet reaped by init: gone
            break
        assert asyncio.get_running_loop().time() < deadline, "the service outlived the demo"
        await asyncio.sleep(0.1)


async def test_a_stack_that_cannot_start_is_one_clear_message(tmp_path: Path) -> None:
    with socket.socket() as squatter:  # something that is not PostgreSQL holds its port
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        run = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "cdb.cli", "demo", "--headless", "--duration", "5",
             "--data-dir", str(tmp_path / "cdb"), "--port-offset", str(free_block()),
             "--redis-port", str(free_port()), "--postgres-port", str(port)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={**os.environ, "COLUMNS": "250"},
        )  # fmt: skip
    assert run.returncode == 1
    assert "start-up failed" in run.stdout
    assert f"Redis/PostgreSQL in {tmp_path / 'cdb'}" in run.stdout
    assert "Traceback" not in run.stdout + run.stderr
