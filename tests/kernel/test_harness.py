"""The harness itself: real servers, reachable, with a password on Redis."""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis
from redis.exceptions import AuthenticationError, ResponseError

from tests.support import REDIS_PASSWORD


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
