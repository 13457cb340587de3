"""Manual approval mode, with risk_manager and execution_service as real processes.

An order the rules approve is held (position reserved, an ``approval_request`` on
``cdb:approvals``) until the owner's ``approval_decision``: approve releases exactly that
order, veto and expiry release the reservation with the reason recorded. At most one
decision per order takes effect — two devices, an approve racing a veto on two replicas, a
replayed request, an approve after the window, a kill -9 of risk_manager between the
decision and its publish or of execution_service between the approval and the fill — and
every decision is a ``config_audit`` row with who made it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Literal

import psycopg
import pytest
from redis.asyncio import Redis
from typer.testing import CliRunner

from cdb import cli
from cdb.core.acl import acl_tokens
from cdb.core.bus import Bus
from cdb.core.events import ApprovalDecision, ApprovalRequest, Order, Signal, Stream
from tests.support import (
    ACL_PASSWORDS,
    FAST_BUS,
    REDIS_PASSWORD,
    ServiceProcess,
    apply_acl_users,
    as_user,
    conninfo,
    eventually_async,
    group_caught_up,
    query,
    scalar,
    scrape,
)

pytestmark = pytest.mark.slow

MANUAL = {"RISK_APPROVAL": "manual", "RISK_APPROVAL_TIMEOUT_S": "600"}


def signal(symbol: str, price: float = 100.0) -> Signal:
    sid = f"sig-{symbol}-{time.time_ns()}"
    return Signal(
        event_id=sid,
        signal_id=sid,
        symbol=symbol,
        side="long",
        confidence=0.5,
        reason=f"scripted +5% on {symbol}",
        price=price,
        pct_change=5.0,
        timestamp=time.time(),
    )


def service(
    module: str, env: dict[str, str], tmp_path: Path, name: str = "0", port: int | None = None
) -> ServiceProcess:
    extra = {**FAST_BUS, "CONSUMER_NAME": f"{module}-{name}"}
    return ServiceProcess(f"cdb.{module}", as_user({**env, **extra}, module), tmp_path, port=port)


async def started(*procs: ServiceProcess) -> None:
    for proc in procs:
        proc.start()
    for proc in procs:
        await asyncio.to_thread(proc.wait_healthy, 60, ("ok", "stale"))


def stop(*procs: ServiceProcess) -> None:
    for proc in procs:
        proc.__exit__()


class Console:
    """Decisions as the console sends them: the ``console`` Redis user."""

    def __init__(self, env: dict[str, str]) -> None:
        client = Redis(
            host=env["REDIS_HOST"],
            port=int(env["REDIS_PORT"]),
            username="console",
            password=ACL_PASSWORDS["console"],
        )
        self.bus = Bus(client, publish_timeout_s=5.0)

    async def decide(
        self,
        order_id: str,
        decision: Literal["approve", "veto"],
        *,
        actor: str = "console:owner",
        reason: str = "",
        event_id: str | None = None,
    ) -> ApprovalDecision:
        event = ApprovalDecision(
            order_id=order_id,
            decision=decision,
            actor=actor,
            reason=reason,
            timestamp=time.time(),
            **({"event_id": event_id} if event_id else {}),
        )
        await self.bus.publish(event, Stream.APPROVAL_DECISIONS)
        return event

    async def close(self) -> None:
        await self.bus.close()


async def entries(bus: Bus, stream: Stream) -> list[dict[str, Any]]:
    raw: Any = await bus.redis.xrange(stream.value)
    return [json.loads(fields[b"event"]) for _, fields in raw]


async def hold(bus: Bus, env: dict[str, str], sig: Signal) -> ApprovalRequest:
    """Publish ``sig`` and return the approval request risk_manager sent for it."""
    await bus.publish(sig)
    found: list[ApprovalRequest] = []

    async def requested() -> bool:
        for entry in await entries(bus, Stream.APPROVALS):
            if entry["order"]["signal_id"] == sig.signal_id:
                found.append(ApprovalRequest.model_validate_json(json.dumps(entry)))
                return True
        return False

    await eventually_async(requested, timeout=60, what=f"approval request for {sig.symbol}")
    return found[0]


def state(env: dict[str, str], order_id: str) -> str | None:
    result = scalar(env, "SELECT state FROM approvals WHERE order_id = %s", (order_id,))
    return None if result is None else str(result)


async def settled(env: dict[str, str], order_id: str, expected: str = "") -> str:
    await eventually_async(
        lambda: state(env, order_id) not in (None, "pending"), what=f"{order_id} decided"
    )
    now = str(state(env, order_id))
    if expected:
        assert now == expected
    return now


async def decisions_consumed(bus: Bus) -> None:
    async def caught_up() -> bool:
        return await group_caught_up(bus.redis, Stream.APPROVAL_DECISIONS.value, "risk_manager")

    await eventually_async(caught_up, timeout=60, what="every decision read and acknowledged")


def audit(env: dict[str, str], order_id: str) -> list[tuple[Any, ...]]:
    return query(
        env,
        "SELECT actor, old_value, new_value FROM config_audit WHERE field = %s ORDER BY id",
        (f"approvals.{order_id}",),
    )


def published_orders(orders: list[dict[str, Any]]) -> list[str]:
    return [o["order_id"] for o in orders]


async def test_a_held_order_waits_and_approve_releases_exactly_that_order(
    bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**service_env, **MANUAL}
    risk = service("risk_manager", env, tmp_path)
    execution = service("execution_service", env, tmp_path)
    console = Console(env)
    try:
        await started(risk, execution)
        first = await hold(bus, env, signal("AAA_USDT"))
        second = await hold(bus, env, signal("BBB_USDT"))
        assert first.order.order_id != second.order.order_id
        assert first.event_id == f"approval-request-{first.order.order_id}"
        assert first.order.notional == pytest.approx(1000.0)  # 10 % of 10 000
        assert first.exposure_after_usdt == pytest.approx(1000.0)
        assert second.exposure_after_usdt == pytest.approx(2000.0)
        assert first.reasons[0] == "scripted +5% on AAA_USDT"
        assert first.expires_at == pytest.approx(first.timestamp + 600)
        # held: reserved in the book, nothing on cdb:orders, execution would refuse it
        assert await bus.redis.xlen(Stream.ORDERS.value) == 0
        assert {r[0] for r in query(env, "SELECT decision FROM risk_decisions")} == {"held"}
        assert {r[0] for r in query(env, "SELECT status FROM risk_positions")} == {"reserved"}
        assert risk.status()["approval"] == {"mode": "manual", "timeout_s": 600, "pending": 2}
        assert scrape(risk.url, "risk_approvals_pending") == 2
        assert scrape(risk.url, "risk_approvals_total", outcome="held") == 2

        await console.decide(first.order.order_id, "approve")
        await settled(env, first.order.order_id, "approved")
        await eventually_async(
            lambda: scalar(env, "SELECT count(*) FROM fills") == 1, what="the approved one filled"
        )
        await decisions_consumed(bus)
        orders = await entries(bus, Stream.ORDERS)
        assert orders == [first.order.model_dump(mode="json")]  # that order, unchanged
        assert query(env, "SELECT order_id, status FROM orders") == [
            (first.order.order_id, "filled")
        ]
        assert state(env, second.order.order_id) == "pending"
        assert audit(env, first.order.order_id) == [("console:owner", "pending", "approved")]
        assert audit(env, second.order.order_id) == []
        assert scrape(risk.url, "risk_approvals_total", outcome="approved") == 1
        assert scrape(risk.url, "risk_approvals_pending") == 1
    finally:
        await console.close()
        stop(execution, risk)


async def test_a_veto_releases_the_reservation_and_records_the_reason(
    bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    # 30 % per position, 50 % in all: a second order fits only once the first is gone
    env = {**service_env, **MANUAL, "MAX_POSITION_PCT": "30", "MAX_EXPOSURE_PCT": "50"}
    risk = service("risk_manager", env, tmp_path)
    console = Console(env)
    try:
        await started(risk)
        first = await hold(bus, env, signal("VETO_USDT"))
        crowded = signal("CROWD_USDT")
        await bus.publish(crowded)
        await eventually_async(
            lambda: (
                scalar(
                    env,
                    "SELECT reason FROM risk_decisions WHERE signal_id = %s",
                    (crowded.signal_id,),
                )
                == "exposure"
            ),
            what="the second signal rejected while the first holds its reservation",
        )

        await console.decide(first.order.order_id, "veto", reason="too late in the day")
        await settled(env, first.order.order_id, "vetoed")
        row = query(
            env,
            "SELECT decided_by, reason FROM approvals WHERE order_id = %s",
            (first.order.order_id,),
        )
        assert row == [("console:owner", "too late in the day")]
        assert query(
            env,
            "SELECT decision, reason FROM risk_decisions WHERE signal_id = %s",
            (first.order.signal_id,),
        ) == [("rejected", "vetoed by console:owner: too late in the day")]
        assert (
            scalar(
                env,
                "SELECT status FROM risk_positions WHERE order_id = %s",
                (first.order.order_id,),
            )
            == "released"
        )
        rejection = scalar(
            env,
            "SELECT reason FROM risk_events WHERE kind = 'rejection' AND signal_id = %s",
            (first.order.signal_id,),
        )
        assert "too late in the day" in rejection
        assert audit(env, first.order.order_id) == [("console:owner", "pending", "vetoed")]

        # the released exposure is free again: the next signal is held, not rejected
        after = await hold(bus, env, signal("AFTER_USDT"))
        assert after.exposure_after_usdt == pytest.approx(3000.0)
        assert await bus.redis.xlen(Stream.ORDERS.value) == 0
        assert risk.status()["book"]["exposure_usdt"] == pytest.approx(3000.0)
        assert scrape(risk.url, "risk_approvals_total", outcome="vetoed") == 1
    finally:
        await console.close()
        stop(risk)


async def test_an_unanswered_order_expires_and_a_late_approve_is_refused(
    bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**service_env, **MANUAL, "RISK_APPROVAL_TIMEOUT_S": "2"}
    risk = service("risk_manager", env, tmp_path)
    console = Console(env)
    try:
        await started(risk)
        request = await hold(bus, env, signal("LATE_USDT"))
        order_id = request.order.order_id
        await settled(env, order_id, "expired")
        assert query(
            env, "SELECT decided_by, reason FROM approvals WHERE order_id = %s", (order_id,)
        ) == [("risk_manager", "expired")]
        assert (
            scalar(env, "SELECT status FROM risk_positions WHERE order_id = %s", (order_id,))
            == "released"
        )
        assert scalar(
            env, "SELECT decision FROM risk_decisions WHERE order_id = %s", (order_id,)
        ) == ("rejected")

        await console.decide(order_id, "approve")
        await decisions_consumed(bus)
        assert state(env, order_id) == "expired"
        assert await bus.redis.xlen(Stream.ORDERS.value) == 0
        assert audit(env, order_id) == [("risk_manager", "pending", "expired")]
        assert scrape(risk.url, "risk_approvals_total", outcome="expired") == 1
        assert scrape(risk.url, "risk_approvals_pending") == 0
    finally:
        await console.close()
        stop(risk)


async def test_an_approve_after_the_window_is_refused_before_the_timer_runs(
    bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    """The window closed, the expiry timer has not run yet (once a minute here): the
    approve expires the order instead of releasing it."""
    env = {**MANUAL, **service_env, "RISK_APPROVAL_TIMEOUT_S": "2", "RISK_APPROVAL_CHECK_S": "60"}
    risk = service("risk_manager", env, tmp_path)
    console = Console(env)
    try:
        await started(risk)
        request = await hold(bus, env, signal("SLOW_USDT"))
        order_id = request.order.order_id
        await eventually_async(lambda: time.time() > request.expires_at + 0.5, what="window closed")
        assert state(env, order_id) == "pending"  # the timer has not run
        await console.decide(order_id, "approve", actor="console:slow")
        await decisions_consumed(bus)
        assert query(
            env, "SELECT state, decided_by, reason FROM approvals WHERE order_id = %s", (order_id,)
        ) == [("expired", "risk_manager", "expired")]
        assert await bus.redis.xlen(Stream.ORDERS.value) == 0
        assert (
            scalar(env, "SELECT status FROM risk_positions WHERE order_id = %s", (order_id,))
            == "released"
        )
        assert audit(env, order_id) == [("risk_manager", "pending", "expired")]
    finally:
        await console.close()
        stop(risk)


async def test_concurrent_decisions_on_two_replicas_give_one_outcome_each(
    bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    """Two devices approving at once, and approve racing veto, with two risk_manager
    replicas reading the decisions: one audit row per order and its effect only, one fill
    per approved order. (Both replicas flush the outbox, so an approved order may reach
    the bus twice: the same event, which execution_service executes once.)"""
    env = {**service_env, **MANUAL, "MAX_POSITION_PCT": "5"}
    replicas = [service("risk_manager", env, tmp_path, name=str(n)) for n in range(2)]
    execution = service("execution_service", env, tmp_path)
    console = Console(env)
    try:
        await started(*replicas, execution)
        requests = [await hold(bus, env, signal(f"RACE{n}_USDT")) for n in range(6)]
        double = [r.order.order_id for r in requests[:3]]
        raced = [r.order.order_id for r in requests[3:]]
        sends = []
        for order_id in double:
            sends += [console.decide(order_id, "approve", actor=f"console:{d}") for d in "ab"]
        for order_id in raced:
            sends += [
                console.decide(order_id, "approve", actor="console:phone"),
                console.decide(order_id, "veto", actor="console:laptop"),
            ]
        await asyncio.gather(*sends)
        await decisions_consumed(bus)
        for order_id in double + raced:
            await settled(env, order_id)
        approved = double + [o for o in raced if state(env, o) == "approved"]
        await eventually_async(
            lambda: scalar(env, "SELECT count(*) FROM fills") == len(approved),
            what="every approved order filled",
        )

        async def executed() -> bool:
            return await group_caught_up(bus.redis, Stream.ORDERS.value, "execution_service")

        await eventually_async(executed, what="execution_service read every copy")
        orders = await entries(bus, Stream.ORDERS)
        published = published_orders(orders)
        assert {o["event_id"] for o in orders} == set(approved)  # copies are the same event
        by_order = {r.order.order_id: r.order.model_dump(mode="json") for r in requests}
        assert all(o == by_order[o["order_id"]] for o in orders)  # the held order, unchanged
        fills = dict(query(env, "SELECT order_id, count(*) FROM fills GROUP BY order_id"))
        assert fills == dict.fromkeys(approved, 1)
        for order_id in double:
            assert state(env, order_id) == "approved"
            (row,) = audit(env, order_id)
            assert row[0] in ("console:a", "console:b") and row[2] == "approved"
        for order_id in raced:
            (row,) = audit(env, order_id)
            outcome = state(env, order_id)
            assert row[2] == outcome
            position = scalar(
                env, "SELECT status FROM risk_positions WHERE order_id = %s", (order_id,)
            )
            if outcome == "approved":
                assert row[0] == "console:phone" and position in ("reserved", "open")
                assert order_id in published
            else:
                assert outcome == "vetoed" and row[0] == "console:laptop"
                assert position == "released" and order_id not in published
        assert scalar(env, "SELECT count(*) FROM config_audit") == 6
    finally:
        await console.close()
        stop(execution, *replicas)


async def test_a_replayed_decision_takes_effect_once(
    bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    """The same decision event twice, the second after its done marker is gone (as after a
    crash before the acknowledgement): the same order goes out again, filled once."""
    env = {**service_env, **MANUAL}
    risk = service("risk_manager", env, tmp_path)
    execution = service("execution_service", env, tmp_path)
    console = Console(env)
    try:
        await started(risk, execution)
        request = await hold(bus, env, signal("REPLAY_USDT"))
        order_id = request.order.order_id
        decision = await console.decide(order_id, "approve", event_id="replayed-request-1")
        await settled(env, order_id, "approved")
        await decisions_consumed(bus)
        await bus.redis.delete(f"cdb:done:risk_manager:{decision.event_id}")
        await console.bus.publish(decision, Stream.APPROVAL_DECISIONS)
        # and the same veto sent twice after it: refused both times
        veto = await console.decide(order_id, "veto", event_id="replayed-veto")
        await console.bus.publish(veto, Stream.APPROVAL_DECISIONS)
        await decisions_consumed(bus)
        await eventually_async(lambda: scalar(env, "SELECT count(*) FROM fills") == 1, what="fill")
        orders = await entries(bus, Stream.ORDERS)
        assert {o["event_id"] for o in orders} == {order_id} and 1 <= len(orders) <= 2
        assert state(env, order_id) == "approved"
        assert audit(env, order_id) == [("console:owner", "pending", "approved")]

        async def executed() -> bool:
            return await group_caught_up(bus.redis, Stream.ORDERS.value, "execution_service")

        await eventually_async(executed, what="execution_service read every copy")
        assert scalar(env, "SELECT count(*) FROM fills") == 1
        assert scalar(env, "SELECT count(*) FROM orders") == 1
    finally:
        await console.close()
        stop(execution, risk)


async def test_kill_9_of_risk_manager_between_the_decision_and_its_publish(
    bus: Bus, service_env: dict[str, str], tmp_path: Path, redis_proc: Any
) -> None:
    """risk_manager commits the approve but cannot publish (its Redis user loses XADD, as
    a crash at that instant would leave it), and is killed; restarted, the order goes out
    once and is filled once."""
    env = {**service_env, **MANUAL}
    risk = service("risk_manager", env, tmp_path)
    execution = service("execution_service", env, tmp_path)
    console = Console(env)
    admin = Redis(host=redis_proc.host, port=redis_proc.port, password=REDIS_PASSWORD)
    try:
        await started(risk, execution)
        request = await hold(bus, env, signal("CRASH_USDT"))
        order_id = request.order.order_id
        # risk_manager's user as before, except that it may no longer append to cdb:orders
        tokens = [
            t.replace(f" ~{Stream.ORDERS.value}", "") if t.startswith("(+xadd") else t
            for t in acl_tokens("risk_manager")
        ]
        password = f">{ACL_PASSWORDS['risk_manager']}"
        await admin.execute_command(
            "ACL", "SETUSER", "risk_manager", "reset", "on", password, *tokens
        )
        await console.decide(order_id, "approve")
        await settled(env, order_id, "approved")
        await eventually_async(
            lambda: (
                scalar(
                    env,
                    "SELECT count(*) FROM outbox WHERE event_id = %s AND published_at IS NULL",
                    (order_id,),
                )
                == 1
            ),
            what="the approved order in the outbox, unpublished",
        )
        assert await bus.redis.xlen(Stream.ORDERS.value) == 0
        risk.kill()
        apply_acl_users(redis_proc.host, redis_proc.port)
        risk = service("risk_manager", env, tmp_path, port=risk.port)
        await started(risk)
        await eventually_async(lambda: scalar(env, "SELECT count(*) FROM fills") == 1, what="fill")
        await decisions_consumed(bus)

        async def executed() -> bool:
            return await group_caught_up(bus.redis, Stream.ORDERS.value, "execution_service")

        await eventually_async(executed, what="execution_service read every copy")
        orders = await entries(bus, Stream.ORDERS)
        assert {o["order_id"] for o in orders} == {order_id}
        assert Order.model_validate_json(json.dumps(orders[0])) == request.order
        assert query(env, "SELECT order_id, status FROM orders") == [(order_id, "filled")]
        assert scalar(env, "SELECT count(*) FROM fills") == 1
        assert audit(env, order_id) == [("console:owner", "pending", "approved")]
    finally:
        await admin.aclose()
        await console.close()
        stop(execution, risk)


async def test_kill_9_of_execution_service_between_the_approval_and_the_fill(
    bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**service_env, **MANUAL}
    risk = service("risk_manager", env, tmp_path)
    execution = service("execution_service", env, tmp_path)
    console = Console(env)
    locker = psycopg.connect(conninfo(env))
    try:
        await started(risk, execution)
        request = await hold(bus, env, signal("EXEC_USDT"))
        order_id = request.order.order_id
        locker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")  # the fill must wait

        async def read_by_execution() -> bool:
            pending: Any = await bus.redis.xpending(Stream.ORDERS.value, "execution_service")
            return int(pending["pending"]) == 1

        await console.decide(order_id, "approve")
        await eventually_async(
            read_by_execution, timeout=60, what="the approved order being executed"
        )
        execution.kill()
        locker.rollback()
        execution = service("execution_service", env, tmp_path, port=execution.port)
        await started(execution)
        await eventually_async(lambda: scalar(env, "SELECT count(*) FROM fills") == 1, what="fill")

        async def executed() -> bool:
            return await group_caught_up(bus.redis, Stream.ORDERS.value, "execution_service")

        await eventually_async(executed, what="the order acknowledged after its fill")
        assert query(env, "SELECT order_id, status FROM orders") == [(order_id, "filled")]
        assert scalar(env, "SELECT count(*) FROM fills") == 1
        assert scalar(env, "SELECT count(*) FROM positions") == 1
    finally:
        locker.close()
        await console.close()
        stop(execution, risk)


async def test_the_cli_lists_held_orders_and_decides_as_the_console_does(
    bus: Bus, service_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**service_env, **MANUAL}
    risk = service("risk_manager", env, tmp_path)
    runner = CliRunner()
    as_console = {**as_user(service_env, "console"), "USER": "tester"}

    def cdb(*args: str) -> Any:
        return asyncio.to_thread(runner.invoke, cli.app, list(args), env=as_console)

    try:
        await started(risk)
        assert "no orders waiting" in (await cdb("approvals")).output
        first = await hold(bus, env, signal("CLI1_USDT"))
        second = await hold(bus, env, signal("CLI2_USDT"))
        listed = await cdb("approvals")
        assert listed.exit_code == 0, listed.output
        lines = listed.output.splitlines()
        assert len(lines) == 2 and {line.split()[0] for line in lines} == {
            first.order.order_id,
            second.order.order_id,
        }
        assert "1000.00 USDT" in lines[0] and "s left" in lines[0]

        vetoed = await cdb("veto", first.order.order_id, "--reason", "not this one")
        assert vetoed.exit_code == 0, vetoed.output
        assert f"order {first.order.order_id}: vetoed by cli:tester" in vetoed.output
        approved = await cdb("approve", second.order.order_id, "--actor", "owner@phone")
        assert f"order {second.order.order_id}: approved by owner@phone" in approved.output
        again = await cdb("approve", first.order.order_id)
        assert again.exit_code == 1 and "vetoed already: nothing sent" in again.output
        unknown = await cdb("veto", "ord-nope")
        assert unknown.exit_code == 1 and "no held order ord-nope" in unknown.output

        orders = await entries(bus, Stream.ORDERS)
        assert published_orders(orders) == [second.order.order_id]
        assert audit(env, first.order.order_id) == [("cli:tester", "pending", "vetoed")]
        assert scalar(
            env, "SELECT reason FROM approvals WHERE order_id = %s", (first.order.order_id,)
        ) == ("not this one")
        everything = await cdb("approvals", "--all")
        assert "vetoed by cli:tester (not this one)" in everything.output
    finally:
        stop(risk)
