"""``cdb demo`` with its live view in a real terminal (a detached tmux session): the
screen fills with real signals, orders and fills, and ``q`` stops everything cleanly.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cdb.demo.plan import DEFAULT_PORTS
from tests.support import ROOT, free_block, free_port

TRADED = re.compile(r"(│ \d\d:\d\d:\d\d  +[A-Z0-9]+_USDT.*){3}")


def tmux(*args: str) -> str:
    tmux_exe = shutil.which("tmux")
    assert tmux_exe, "tmux missing: scripts/setup.sh installs it"
    return subprocess.run([tmux_exe, *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_live_view_in_a_terminal_shows_trading_and_q_stops_the_stack(
    tmp_path: Path,
) -> None:
    session = f"cdb-demo-test-{free_port()}"
    offset = free_block()
    done = tmp_path / "exit-code"
    command = (
        f"{sys.executable} -m cdb.cli demo --data-dir {tmp_path / 'cdb'} "
        f"--port-offset {offset} --redis-port {free_port()} --postgres-port {free_port()}"
        f"; echo $? > {done}; sleep 600"
    )
    tmux("new-session", "-d", "-s", session, "-x", "220", "-y", "60", "-c", str(ROOT), command)
    tmux("set-option", "-t", session, "window-size", "manual")  # no client decides the size
    tmux("resize-window", "-t", session, "-x", "220", "-y", "60")
    try:
        deadline = asyncio.get_running_loop().time() + 180
        screen = ""
        while True:
            screen = tmux("capture-pane", "-p", "-t", session)
            # a row in each of Latest signals, Orders and Fills (side by side on one line)
            if TRADED.search(screen):
                break
            assert not done.exists(), f"the demo exited:\n{screen}"
            assert asyncio.get_running_loop().time() < deadline, f"no trades shown:\n{screen}"
            await asyncio.sleep(1.0)
        for panel in ("Latest signals", "Orders", "Fills", "Open positions", "Services",
                      "Account (paper)", "equity"):  # fmt: skip
            assert panel in screen, screen
        assert "Top 5 gainers" in screen and "Top 5 losers" in screen
        assert re.search(r"bot_ws +ok", screen), screen
        tmux("send-keys", "-t", session, "q")
        while not done.exists():
            assert asyncio.get_running_loop().time() < deadline + 60, "q did not stop the demo"
            await asyncio.sleep(0.5)
        final = tmux("capture-pane", "-p", "-t", session)
        assert done.read_text().strip() == "0", final
        assert "data kept in" in final, final
        for name in ("bot_ws", "signal_engine", "execution_service", "mexc_sim"):
            with socket.socket() as sock:
                assert sock.connect_ex(("127.0.0.1", DEFAULT_PORTS[name] + offset)) != 0
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
