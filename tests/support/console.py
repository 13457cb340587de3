"""Shared by the console's tests (HTTP and browser): a console process over a test
database, rows written as the services would write them, and a logged-in client."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from psycopg.types.json import Jsonb

from cdb.core.bus import PAYLOAD_FIELD
from cdb.core.events import Order, Stream
from tests.support.credentials import REDIS_PASSWORD, as_user
from tests.support.processes import ServiceProcess
from tests.support.sql import conninfo

PASSWORD = "test-only-console-password"
SYMBOL = "SECRET_USDT"  # a symbol only the books hold: no page may show it without a login


def console_env(env: dict[str, str], tmp_path: Path, **extra: str) -> dict[str, str]:
    password_file = tmp_path / "console.password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    return {
        **as_user(env, "console"),
        "CONSOLE_PASSWORD_FILE": str(password_file),
        "CONSOLE_SESSION_SECRET": "test-only-session-secret",
        "CONSOLE_REFRESH_S": "0.5",
        "MIGRATE_ON_START": "true",  # the test has no other service to migrate
        **extra,
    }


def start_console(env: dict[str, str], tmp_path: Path, **extra: str) -> ServiceProcess:
    console = ServiceProcess("cdb.console", console_env(env, tmp_path, **extra), tmp_path)
    console.start().wait_healthy(timeout=60)
    return console


def execute(env: dict[str, str], sql: str, params: Any = None) -> None:
    with psycopg.connect(conninfo(env), connect_timeout=5, autocommit=True) as conn:
        conn.execute(sql, params)


def open_position(env: dict[str, str], symbol: str = SYMBOL, order_id: str = "o-1") -> None:
    """An order, its fill and the position, as execution_service records them."""
    execute(
        env,
        "INSERT INTO orders (order_id, signal_id, symbol, side, quantity, notional, price,"
        " stop_loss, mode, status) VALUES (%s, %s, %s, 'long', 500, 1000, 2, 1.96, 'paper',"
        " 'filled')",
        (order_id, f"s-{order_id}", symbol),
    )
    execute(
        env,
        "INSERT INTO positions (position_id, order_id, symbol, side, quantity, entry_price,"
        " stop_loss, status) VALUES (%s, %s, %s, 'long', 500, 2, 1.96, 'open')",
        (f"p-{order_id}", order_id, symbol),
    )


def hold_order(env: dict[str, str], order_id: str, symbol: str = SYMBOL) -> Order:
    """A pending approval row, as risk_manager writes it in manual mode."""
    order = Order(
        order_id=order_id,
        signal_id=f"sig-{order_id}",
        symbol=symbol,
        side="long",
        quantity=500.0,
        notional=1000.0,
        price=2.0,
        stop_loss=1.96,
        timestamp=time.time(),
    )
    execute(
        env,
        "INSERT INTO approvals (order_id, signal_id, symbol, side, order_json, details,"
        " expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            order_id,
            order.signal_id,
            symbol,
            "long",
            Jsonb(order.model_dump(mode="json")),
            Jsonb(
                {
                    "exposure_after_usdt": 1000.0,
                    "exposure_after_pct": 10.0,
                    "equity_usdt": 10_000.0,
                    "reasons": ["pct_change 4.5 >= 3.0", "volume 250000 >= 100000"],
                }
            ),
            datetime.now(UTC) + timedelta(minutes=10),
        ),
    )
    return order


def login(url: str, password: str = PASSWORD) -> httpx.Response:
    """Fetch the form (its login token and cookie), post the password; returns the
    answer to the post, the client's cookies on ``response.client``-less: use
    :func:`logged_in` for a session."""
    with httpx.Client(base_url=url, timeout=10) as client:
        return _post_login(client, password)


def _post_login(client: httpx.Client, password: str) -> httpx.Response:
    form = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', form.text)
    return client.post(
        "/login",
        data={"login_token": token.group(1) if token else "", "password": password, "next": "/"},
    )


def logged_in(url: str) -> tuple[httpx.Client, str]:
    """A client holding the owner's session, and the session's CSRF token."""
    client = httpx.Client(base_url=url, timeout=10)
    reply = _post_login(client, PASSWORD)
    assert reply.status_code == 303, reply.text
    page = client.get("/")
    csrf = re.search(r'data-csrf="([^"]+)"', page.text)
    assert csrf is not None, page.text[:500]
    return client, csrf.group(1)


def entries(env: dict[str, str], stream: Stream) -> list[dict[str, Any]]:
    """Every event on ``stream``, read as the admin."""
    admin = redis.Redis(
        host=env["REDIS_HOST"], port=int(env["REDIS_PORT"]), password=REDIS_PASSWORD
    )
    with admin:
        return [json.loads(fields[PAYLOAD_FIELD]) for _, fields in admin.xrange(stream.value)]
