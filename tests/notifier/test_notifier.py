"""The notifier as a real process against real Redis and PostgreSQL, delivering through
apprise to a local JSON webhook (tests/support/notify_receiver.py): every cause exactly once,
retries through a failing channel, a kill mid-send, flood grouping, and no secret shown."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from cdb import cli
from cdb.core.bus import Bus
from cdb.core.events import Alert, Control, ControlSettings, OrderResult, Stream
from cdb.notifier.delivery import TokenBucket, in_quiet_hours, release_time
from cdb.notifier.settings import parse_quiet_hours
from tests.support import ADMIN_TOKEN, ServiceProcess, eventually_async, scalar, scrape
from tests.support.notify_receiver import NOTIFY_SECRET, Receiver, Request, notifier_env

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def start(env: dict[str, str], tmp_path: Path, port: int | None = None) -> ServiceProcess:
    proc = ServiceProcess("cdb.notifier", env, tmp_path, port=port).start()
    proc.wait_healthy(timeout=60)
    return proc


def breaker(event_id: str = "alert-breaker:2026-12-07") -> Alert:
    return Alert(
        event_id=event_id,
        kind="circuit_breaker",
        severity="critical",
        message="circuit breaker tripped: daily loss 5.0% >= 5%",
        source="risk_manager",
        details={"daily_pnl": -500.0},
        timestamp=time.time(),
    )


def result(status: str, symbol: str, event_id: str) -> OrderResult:
    return OrderResult(
        event_id=event_id,
        order_id=f"o-{event_id}",
        symbol=symbol,
        side="long",
        status=status,  # type: ignore[arg-type]
        fill_price=100.0,
        quantity=1.0,
        realized_pnl=-2.0 if status == "closed" else 0.0,
        mode="live" if status == "unknown" else "paper",
        timestamp=time.time(),
    )


def bodies(receiver: Receiver) -> list[dict[str, Any]]:
    return [r.json() for r in receiver.accepted("/hook")]


async def test_every_cause_is_sent_once_and_a_redelivery_sends_nothing(
    bus: Bus, service_env: dict[str, str], receiver: Receiver, tmp_path: Path
) -> None:
    proc = start(notifier_env(service_env, receiver), tmp_path)
    try:
        await bus.publish(breaker())
        await bus.publish(result("closed", "BTC_USDT", "r1:closed"))
        await bus.publish(result("filled", "ETH_USDT", "r2"))  # NOTIFY_FILLS=closes: quiet
        await bus.publish(result("unknown", "SOL_USDT", "r3"))
        await bus.publish(
            Control(
                bot="mexc-momentum",
                generation=4,
                config_hash="h4",
                settings=ControlSettings(paused=True),
                timestamp=time.time(),
            )
        )
        await bus.redis.xadd(
            Stream.DEAD_LETTER.value,
            {b"stream": b"cdb:signals", b"group": b"risk_manager", b"consumer": b"c",
             b"entry_id": b"1-0", b"reason": b"malformed event: side", b"payload": b"{}"},
        )  # fmt: skip
        await eventually_async(lambda: len(receiver.accepted()) >= 5, timeout=30, what="5 messages")
        time.sleep(1.5)  # anything else would have arrived by now
        titles = sorted(body["title"] for body in bodies(receiver))
        assert len(titles) == 5, titles
        assert any(t.startswith("Circuit breaker tripped") for t in titles)
        assert any(t.startswith("Stop-loss closed BTC_USDT") for t in titles)
        assert any("SOL_USDT is unknown to MEXC" in t for t in titles)
        assert any(t.startswith("TradingBot mexc-momentum changed") for t in titles)
        assert any("dead-lettered an entry of cdb:signals" in t for t in titles)
        assert not any("ETH_USDT" in t for t in titles)
        breaker_body = next(b for b in bodies(receiver) if b["title"].startswith("Circuit"))
        assert breaker_body["type"] == "failure" and "reset" in breaker_body["message"]
        ids = {r.headers["x-cdb-message-id"] for r in receiver.accepted()}
        assert breaker_body["cdb_message_id"] in ids and len(ids) == 5

        # The same causes again (a redelivery, an outbox re-flush) and a restart: nothing new.
        await bus.publish(breaker())
        await bus.publish(result("closed", "BTC_USDT", "r1:closed"))
        proc.kill()
        proc = start(notifier_env(service_env, receiver), tmp_path)
        await bus.publish(breaker())
        time.sleep(2.0)
        assert len(receiver.accepted()) == 5
        status = proc.status()
        assert status["deliveries"] == {"json-1": {"sent": 5}}
        # the restarted process delivered nothing (its series exist from the start, at 0)
        assert scrape(proc.url, "notifier_notifications_delivered_total", channel="json-1") == 0
        assert (
            'notifier_deliveries_failed_total{channel="json-1"} 0.0'
            in httpx.get(f"{proc.url}/metrics").text
        )
        assert scalar(service_env, "SELECT count(*) FROM notifications") == 5
        # The channel's URL carries its token: never in /status, /metrics or the log.
        assert NOTIFY_SECRET not in json.dumps(status)
        assert NOTIFY_SECRET not in httpx.get(f"{proc.url}/metrics").text
        assert status["channels"] == ["json-1"]
    finally:
        proc.__exit__()
    assert NOTIFY_SECRET not in proc.log_path.read_text()


async def test_a_channel_answering_500_for_a_while_gets_the_message_once_it_recovers(
    bus: Bus, service_env: dict[str, str], receiver: Receiver, tmp_path: Path
) -> None:
    first: list[float] = []  # the channel is broken for 6 s from the first send it sees

    def answer(request: Request) -> int:
        first.append(first[0] if first else request.at)
        return 500 if request.at < first[0] + 6.0 else 200

    receiver.answer = answer
    proc = start(notifier_env(service_env, receiver), tmp_path)
    try:
        await bus.publish(breaker())
        await eventually_async(lambda: len(receiver.accepted()) == 1, timeout=40, what="delivered")
        assert len(receiver.all()) > 1, "it was refused before it went through"
        assert {r.headers["x-cdb-message-id"] for r in receiver.all()} == {
            receiver.accepted()[0].headers["x-cdb-message-id"]
        }, "every retry carries the same message id"
        await eventually_async(lambda: proc.status()["deliveries"] == {"json-1": {"sent": 1}})
        failures = scrape(proc.url, "notifier_send_failures_total", channel="json-1")
        assert failures == len(receiver.all()) - 1
        assert scrape(proc.url, "notifier_deliveries_failed_total", channel="json-1") == 0
        time.sleep(1.0)
        assert len(receiver.accepted()) == 1
    finally:
        proc.__exit__()


async def test_after_the_last_attempt_a_delivery_is_recorded_failed_and_counted(
    bus: Bus, service_env: dict[str, str], receiver: Receiver, tmp_path: Path
) -> None:
    receiver.answer = lambda request: 500
    env = notifier_env(service_env, receiver, NOTIFY_MAX_ATTEMPTS="3")
    proc = start(env, tmp_path)
    try:
        await bus.publish(breaker())
        await eventually_async(
            lambda: proc.status()["deliveries"] == {"json-1": {"failed": 1}}, timeout=30
        )
        assert len(receiver.all()) == 3
        assert scrape(proc.url, "notifier_deliveries_failed_total", channel="json-1") == 1
        attempts, error = (
            scalar(service_env, "SELECT attempts FROM notification_deliveries"),
            scalar(service_env, "SELECT last_error FROM notification_deliveries"),
        )
        assert attempts == 3 and "500" in error and NOTIFY_SECRET not in error
        time.sleep(1.0)
        assert len(receiver.all()) == 3, "given up means no further sends"
    finally:
        proc.__exit__()
    assert "notification given up" in proc.log()


async def test_kill_mid_send_loses_nothing_and_the_resend_carries_the_same_id(
    bus: Bus, service_env: dict[str, str], receiver: Receiver, tmp_path: Path
) -> None:
    """SIGKILL while the channel holds a request unanswered. On restart every cause is
    delivered; those the channel had answered are not sent again; the one in flight is sent
    again with the same message id, which is how a receiver drops the copy."""
    env = notifier_env(service_env, receiver)
    proc = start(env, tmp_path)
    try:
        for n in range(3):
            await bus.publish(result("unknown", f"S{n}_USDT", f"u{n}"))
            await eventually_async(
                lambda n=n: len(receiver.accepted()) == n + 1, what=f"message {n}"
            )
        receiver.hold_path, _ = "/hook", receiver.hold.set()
        await bus.publish(result("unknown", "HELD_USDT", "u-held"))
        assert receiver.held.wait(20), "the fourth send reached the channel"
        proc.kill()
        receiver.hold.clear()
        for n in range(4, 6):
            await bus.publish(result("unknown", f"S{n}_USDT", f"u{n}"))
        proc = start(env, tmp_path, port=proc.port)
        await eventually_async(lambda: len(receiver.accepted()) == 6, timeout=30, what="all six")
        time.sleep(1.5)
        ids = [r.headers["x-cdb-message-id"] for r in receiver.all()]
        accepted = [r.headers["x-cdb-message-id"] for r in receiver.accepted()]
        assert len(accepted) == len(set(accepted)) == 6, "each cause accepted once"
        held = next(r for r in receiver.all() if r.status == -1).headers["x-cdb-message-id"]
        assert ids.count(held) == 2 and held in accepted  # on the wire twice, same id
        assert all(ids.count(i) == 1 for i in accepted if i != held)
        assert proc.status()["deliveries"] == {"json-1": {"sent": 6}}
    finally:
        proc.__exit__()


def alertmanager_payload(status: str, symbols: list[str]) -> dict[str, Any]:
    return {
        "version": "4",
        "status": status,
        "receiver": "notifier",
        "groupKey": '{}:{alertname="CdbSymbolStale"}',
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": "CdbSymbolStale", "severity": "warning", "symbol": s},
                "annotations": {"summary": "Symbol stale"},
                "startsAt": "2026-12-07T07:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": f"fp{s}",
            }
            for s in symbols
        ],
    }


async def test_a_flood_of_alerts_goes_out_as_one_message_and_resolved_as_another(
    bus: Bus, service_env: dict[str, str], receiver: Receiver, tmp_path: Path
) -> None:
    proc = start(notifier_env(service_env, receiver, NOTIFY_GROUP_WAIT_S="1"), tmp_path)
    try:
        symbols = [f"C{n:02d}_USDT" for n in range(40)]
        # A state change takes the admin credential: without it nothing is stored.
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            refused = httpx.post(
                f"{proc.url}/alertmanager",
                json=alertmanager_payload("firing", symbols),
                headers=headers,
            )
            assert refused.status_code == 401, refused.text
        reply = httpx.post(
            f"{proc.url}/alertmanager", json=alertmanager_payload("firing", symbols), headers=AUTH
        )
        assert reply.status_code == 200 and reply.json() == {"alerts": 40, "new": 40}
        again = httpx.post(
            f"{proc.url}/alertmanager", json=alertmanager_payload("firing", symbols), headers=AUTH
        )
        assert again.json() == {"alerts": 40, "new": 0}  # Alertmanager's repeat: nothing new
        await eventually_async(lambda: len(receiver.accepted()) == 1, what="one grouped message")
        first = bodies(receiver)[0]
        assert first["title"].startswith("40x Symbol stale")
        assert "C00_USDT" in first["message"] and "and 20 more" in first["message"]
        httpx.post(
            f"{proc.url}/alertmanager", json=alertmanager_payload("resolved", symbols), headers=AUTH
        )
        await eventually_async(lambda: len(receiver.accepted()) == 2, what="the resolved message")
        resolved = bodies(receiver)[1]
        assert resolved["title"].startswith("40x Resolved: Symbol stale")
        assert resolved["type"] == "info"
        breaker = alertmanager_payload("firing", ["X_USDT"])
        breaker["alerts"][0]["labels"]["alertname"] = "CdbCircuitBreakerTripped"
        skipped = httpx.post(f"{proc.url}/alertmanager", json=breaker, headers=AUTH)
        assert skipped.json() == {"alerts": 1, "new": 0}  # told from the bus instead
        bad = httpx.post(f"{proc.url}/alertmanager", json={"alerts": "nope"}, headers=AUTH)
        assert bad.status_code == 422
    finally:
        proc.__exit__()


async def test_cdb_notify_test_reports_each_channel_and_fails_when_one_fails(
    service_env: dict[str, str], receiver: Receiver, tmp_path: Path
) -> None:
    runner = CliRunner()
    proc = start(notifier_env(service_env, receiver, NOTIFY_MAX_ATTEMPTS="2"), tmp_path)
    try:
        anonymous = runner.invoke(
            cli.app,
            ["notify", "test", "--url", proc.url, "--token-file", str(tmp_path / "none")],
            env={"ADMIN_TOKEN": ""},
        )
        assert anonymous.exit_code == 1 and "no admin credential" in anonymous.output
        result = runner.invoke(
            cli.app, ["notify", "test", "--url", proc.url], env={"ADMIN_TOKEN": ADMIN_TOKEN}
        )
        assert result.exit_code == 0, result.output
        assert "json-1: sent after 1 attempt(s)" in result.output
        assert bodies(receiver)[0]["title"] == "cdb test notification"
        receiver.answer = lambda request: 500
        token = tmp_path / "admin.token"  # the demo's file, as the CLI reads it by default
        token.write_text(ADMIN_TOKEN)
        result = runner.invoke(
            cli.app,
            ["notify", "test", "--url", proc.url, "--token-file", str(token)],
            env={"ADMIN_TOKEN": ""},
        )
        assert result.exit_code == 1
        assert (
            "json-1: failed after 2 attempt(s)" in result.output
            and NOTIFY_SECRET not in result.output
        )
    finally:
        proc.__exit__()


def test_a_bad_quiet_hours_value_stops_the_notifier_with_one_clear_line(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**service_env, "NOTIFY_QUIET_HOURS": "22-7"}
    proc = ServiceProcess("cdb.notifier", env, tmp_path).start()
    assert proc.proc is not None and proc.proc.wait(30) == 2
    assert "config error: NOTIFY_QUIET_HOURS='22-7'" in proc.log()


def test_quiet_hours_hold_back_non_critical_messages_only() -> None:
    quiet = parse_quiet_hours("22:00-07:00")
    night = datetime(2026, 12, 7, 23, 30, tzinfo=UTC)
    assert in_quiet_hours(night, quiet) and not in_quiet_hours(night.replace(hour=12), quiet)
    assert release_time(night, "warning", quiet) == datetime(2026, 12, 8, 7, 0, tzinfo=UTC)
    assert release_time(night, "critical", quiet) == night
    noon = night.replace(hour=12)
    assert release_time(noon, "info", quiet, 5) == noon + timedelta(seconds=5)
    early = datetime(2026, 12, 7, 6, 59, tzinfo=UTC)
    assert release_time(early, "info", quiet) == early.replace(hour=7, minute=0)
    assert parse_quiet_hours("") is None
    with pytest.raises(ValueError):
        parse_quiet_hours("07:00-07:00")


def test_the_rate_limit_lets_a_burst_through_then_one_per_interval() -> None:
    now = [0.0]
    bucket = TokenBucket(rate_per_min=6, clock=lambda: now[0])
    assert [bucket.take() for _ in range(7)] == [True] * 6 + [False]
    now[0] += 9.0
    assert not bucket.take()
    now[0] += 1.0
    assert bucket.take() and not bucket.take()


async def test_the_daily_summary_reads_the_books(settings: Any, postgresql: Any) -> None:
    from cdb.core.config import ServiceSettings
    from cdb.core.db import Database, apply_migrations
    from cdb.notifier import store
    from cdb.notifier.messages import daily_summary

    assert isinstance(settings, ServiceSettings)
    await apply_migrations(settings)
    db = Database(settings)
    await db.open()
    try:
        async with db.connection() as conn:
            await conn.execute(
                "INSERT INTO orders (order_id, signal_id, symbol, side, quantity, notional, price,"
                " stop_loss, mode, status) VALUES ('o1', 's1', 'BTC_USDT', 'long', 1, 100, 100,"
                " 98, 'paper', 'filled')"
            )
            await conn.execute(
                "INSERT INTO fills (fill_id, order_id, symbol, side, kind, price, quantity, fee,"
                " realized_pnl) VALUES ('f1', 'o1', 'BTC_USDT', 'long', 'open', 100, 1, 0.05, 0),"
                " ('f2', 'o1', 'BTC_USDT', 'long', 'close', 98, 1, 0.05, -2)"
            )
            await conn.execute(
                "INSERT INTO risk_positions (order_id, signal_id, symbol, side, quantity, notional,"
                " entry_price, stop_loss, status) VALUES"
                " ('o2', 's2', 'ETH_USDT', 'long', 1, 250, 250, 245, 'open')"
            )
            await conn.execute(
                "INSERT INTO risk_days (day, opening_equity, breaker_tripped_at, breaker_reason)"
                " VALUES (current_date, 10000, now(), 'daily loss')"
            )
            figures = await store.day_summary(conn, datetime.now(UTC))
    finally:
        await db.close()
    assert (figures.trades, figures.closes, figures.open_positions) == (1, 1, 1)
    assert figures.realized_pnl == -2 and figures.fees == pytest.approx(0.1)
    assert figures.exposure == 250 and figures.breaker_active is True
    message = daily_summary(**vars(figures))
    assert message.key == f"daily:{datetime.now(UTC).date().isoformat()}"
    assert "TRIPPED" in message.body and "exposure 250.00 USDT" in message.body
