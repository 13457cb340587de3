"""Fixtures of the market-data tests: mexc_sim as a real process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import SimProcess


@pytest.fixture
def sim_factory(tmp_path: Path) -> Iterator[Callable[[list[str]], SimProcess]]:
    started: list[SimProcess] = []

    def start(flags: list[str]) -> SimProcess:
        sim = SimProcess(flags, tmp_path).start()
        started.append(sim)
        sim.wait_healthy()
        return sim

    yield start
    for sim in started:
        sim.__exit__()
