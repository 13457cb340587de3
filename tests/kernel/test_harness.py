"""The harness itself: real servers, reachable, with a password on Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from redis.exceptions import AuthenticationError, ResponseError

from tests.support import REDIS_PASSWORD, ServiceProcess


def test_redis_requires_a_password(redis_proc: Any) -> None:
    anonymous = Redis(host=redis_proc.host, port=redis_proc.port)
    with pytest.raises((AuthenticationError, ResponseError)):
        anonymous.ping()
    assert Redis(host=redis_proc.host, port=redis_proc.port, password=REDIS_PASSWORD).ping()


def test_postgres_is_a_real_server(postgresql: Any) -> None:
    with postgresql.cursor() as cur:
        cur.execute("SHOW server_version")
        version = cur.fetchone()[0]
    assert int(version.split(".")[0]) >= 13


def test_a_started_service_process_entered_runs_once_and_stops(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    """``with ServiceProcess(...).start() as proc`` runs one process and stops it; it
    once started a second one and left the first running after the test."""
    started = ServiceProcess("cdb.signal_engine", service_env, tmp_path).start()
    first = started.proc
    with started as proc:
        assert proc.proc is first
        proc.wait_healthy(timeout=60)
    assert first is not None and first.poll() is not None
