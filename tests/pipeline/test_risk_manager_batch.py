"""risk_manager takes the signals of one read in one transaction: the same decisions,
reservations and published orders (in the same order) as one signal at a time, limits
reached by the batch's own approvals included; an entry that does not parse is
dead-lettered alone; a hold for approval sends the read one signal at a time; a SIGKILL
before the batch's commit, or after it and before its acknowledgement, leaves every signal
decided once and every approved order published after the restart."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdb.core.bus import Bus
from cdb.core.config import ServiceSettings
from cdb.core.db import apply_migrations
from cdb.core.events import OrderResult, Signal, Stream
from tests.support import (
    Pipeline,
    conninfo,
    eventually_async,
    query,
    scalar,
    scrape,
    waiting_to_insert,
)

pytestmark = pytest.mark.slow

# a position is 10 % of equity, exposure stops at 30 %: the third approval of a read
# reaches the cap, so the signals after it are rejected by the batch's own reservations
LIMITS = {"MAX_POSITION_PCT": "10", "MAX_EXPOSURE_PCT": "30"}
# A again while its position is reserved; D and E over the exposure cap
SYMBOLS = ["A_USDT", "B_USDT", "A_USDT", "C_USDT", "D_USDT", "E_USDT"]
N = len(SYMBOLS)


@pytest.fixture
async def risk_env(service_env: dict[str, str], settings: ServiceSettings) -> dict[str, str]:
    """``service_env`` with the schema in place, so the signals are on the stream before
    risk_manager starts: it reads them all in one read."""
    await apply_migrations(settings)
    return service_env


def a_signal(prefix: str, index: int, symbol: str) -> Signal:
    sid = f"{prefix}-{index}"
    return Signal(
        event_id=sid,
        signal_id=sid,
        symbol=symbol,
        side="long" if index % 2 else "short",
        confidence=0.5,
        reason="scripted",
        price=100.0 + index,
        pct_change=5.0,
        timestamp=time.time(),
    )


def signals(prefix: str, symbols: list[str] = SYMBOLS) -> list[Signal]:
    return [a_signal(prefix, i, symbol) for i, symbol in enumerate(symbols)]


def decided(env: dict[str, str], prefix: str) -> int:
    return int(
        scalar(env, "SELECT count(*) FROM risk_decisions WHERE signal_id LIKE %s", (f"{prefix}-%",))
    )


def book(env: dict[str, str], prefix: str) -> list[tuple[Any, ...]]:
    """Each signal's decision, reason, reservation and risk event, without ids and clocks."""
    return query(
        env,
        "SELECT d.decision, d.reason, p.symbol, p.side, p.quantity, p.notional,"
        " p.entry_price, p.stop_loss, e.kind, e.reason"
        " FROM risk_decisions d LEFT JOIN risk_positions p USING (signal_id)"
        " LEFT JOIN risk_events e ON e.signal_id = d.signal_id"
        " WHERE d.signal_id LIKE %s ORDER BY d.signal_id",
        (f"{prefix}-%",),
    )


def transactions(env: dict[str, str], prefix: str) -> int:
    """How many transactions decided these signals (``decided_at`` is the transaction's now())."""
    return int(
        scalar(
            env,
            "SELECT count(DISTINCT decided_at) FROM risk_decisions WHERE signal_id LIKE %s",
            (f"{prefix}-%",),
        )
    )


async def orders_on_bus(bus: Bus, prefix: str) -> list[dict[str, Any]]:
    """The orders published for these signals, in stream order."""
    entries: Any = await bus.redis.xrange(Stream.ORDERS.value)
    orders = [json.loads(fields[b"event"]) for _, fields in entries]
    return [o for o in orders if o["signal_id"].startswith(f"{prefix}-")]


def without_clock(order: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in order.items() if k not in ("event_id", "order_id", "signal_id")}


def without_ids(order: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in without_clock(order).items() if k != "timestamp"}


async def pending_signals(bus: Bus) -> int:
    info: Any = await bus.redis.xpending(Stream.SIGNALS.value, "risk_manager")
    return int(info["pending"])


async def acknowledged(bus: Bus) -> bool:
    return await pending_signals(bus) == 0


async def release(bus: Bus, env: dict[str, str], prefix: str) -> None:
    """The venue rejected every approved order of ``prefix``: their reservations end."""
    for order in await orders_on_bus(bus, prefix):
        await bus.publish(
            OrderResult(
                order_id=order["order_id"],
                symbol=order["symbol"],
                side=order["side"],
                status="rejected",
                timestamp=time.time(),
            )
        )
    await eventually_async(
        lambda: scalar(env, "SELECT count(*) FROM risk_positions WHERE status <> 'released'") == 0,
        "the reservations released",
    )


async def test_a_read_decides_what_one_signal_at_a_time_decides(
    bus: Bus, risk_env: dict[str, str], tmp_path: Path
) -> None:
    batch = signals("batch")
    for sig in batch:  # on the stream before the service reads: one read
        await bus.publish(sig)
    pipeline = Pipeline(risk_env, tmp_path, **LIMITS).start("risk_manager")
    try:
        await eventually_async(
            lambda: decided(risk_env, "batch") == N, "the read's signals decided", timeout=30
        )
        await eventually_async(lambda: acknowledged(bus), "the read acknowledged", timeout=30)
        batch_orders = await orders_on_bus(bus, "batch")
        await release(bus, risk_env, "batch")  # the same empty book for the singles
        for count, sig in enumerate(signals("single"), start=1):
            await bus.publish(sig)
            await eventually_async(
                lambda c=count: decided(risk_env, "single") == c, "the signal decided"
            )
        assert transactions(risk_env, "batch") == 1, "the read was not one transaction"
        assert transactions(risk_env, "single") == N
        decisions = [row[:2] for row in book(risk_env, "batch")]
        assert decisions == [
            ("approved", ""),
            ("approved", ""),
            ("rejected", "position_open"),
            ("approved", ""),
            ("rejected", "exposure"),
            ("rejected", "exposure"),
        ]
        assert book(risk_env, "batch") == book(risk_env, "single")
        single_orders = await orders_on_bus(bus, "single")
        assert [o["signal_id"] for o in batch_orders] == ["batch-0", "batch-1", "batch-3"]
        assert [without_ids(o) for o in batch_orders] == [without_ids(o) for o in single_orders]
        assert len({o["timestamp"] for o in batch_orders}) == 1
        url = pipeline.procs["risk_manager"].url
        assert scrape(url, "risk_orders_approved_total") == 6
        assert scrape(url, "risk_signals_rejected_total", reason="exposure") == 4
        assert await bus.redis.xlen(Stream.DEAD_LETTER.value) == 0
    finally:
        pipeline.stop()


async def test_an_entry_that_does_not_parse_is_dead_lettered_alone(
    bus: Bus, risk_env: dict[str, str], tmp_path: Path
) -> None:
    batch = signals("mixed")
    for index, sig in enumerate(batch):
        if index == 2:
            await bus.redis.xadd(Stream.SIGNALS.value, {"event": b'{"signal_id": "broken"'})
        await bus.publish(sig)
    pipeline = Pipeline(risk_env, tmp_path, **LIMITS).start("risk_manager")
    try:
        await eventually_async(lambda: decided(risk_env, "mixed") == N, "the signals decided")
        await eventually_async(lambda: acknowledged(bus), "the read acknowledged", timeout=30)
        assert transactions(risk_env, "mixed") == 1, "the valid signals were not one batch"
        assert await bus.redis.xlen(Stream.DEAD_LETTER.value) == 1
        assert [o["signal_id"] for o in await orders_on_bus(bus, "mixed")] == [
            "mixed-0",
            "mixed-1",
            "mixed-3",
        ]
        assert scalar(risk_env, "SELECT count(*) FROM risk_decisions") == N
        url = pipeline.procs["risk_manager"].url
        assert scrape(url, "risk_orders_approved_total") == 3
    finally:
        pipeline.stop()


async def test_a_read_held_for_approval_is_decided_one_signal_at_a_time(
    bus: Bus, risk_env: dict[str, str], tmp_path: Path
) -> None:
    held = signals("held", ["A_USDT", "B_USDT", "C_USDT"])
    for sig in held:
        await bus.publish(sig)
    manual = {"RISK_APPROVAL": "manual", "RISK_APPROVAL_TIMEOUT_S": "600"}
    pipeline = Pipeline(risk_env, tmp_path, **LIMITS, **manual).start("risk_manager")
    try:
        await eventually_async(lambda: decided(risk_env, "held") == 3, "the signals held")
        await eventually_async(lambda: acknowledged(bus), "the read acknowledged", timeout=30)
        assert query(risk_env, "SELECT DISTINCT decision FROM risk_decisions") == [("held",)]
        assert scalar(risk_env, "SELECT count(*) FROM approvals WHERE state = 'pending'") == 3
        assert transactions(risk_env, "held") == 3  # the one-at-a-time road
        assert await orders_on_bus(bus, "held") == [], "a held order was published"
        requests: Any = await bus.redis.xrange(Stream.APPROVALS.value)
        assert len(requests) == 3
        url = pipeline.procs["risk_manager"].url
        assert scrape(url, "risk_approvals_total", outcome="held") == 3
        assert await bus.redis.xlen(Stream.DEAD_LETTER.value) == 0
    finally:
        pipeline.stop()


async def assert_each_decided_once(bus: Bus, env: dict[str, str], prefix: str) -> None:
    assert decided(env, prefix) == N
    assert scalar(env, "SELECT count(*) FROM risk_positions") == 3
    approved = [
        str(r[0])
        for r in query(
            env,
            "SELECT signal_id FROM risk_decisions WHERE decision = 'approved' ORDER BY signal_id",
        )
    ]
    assert approved == [f"{prefix}-0", f"{prefix}-1", f"{prefix}-3"]
    # a restart may publish an order again: the same event id, which execution skips
    orders = await orders_on_bus(bus, prefix)
    assert {o["signal_id"] for o in orders} == set(approved)
    assert len({o["event_id"] for o in orders}) == len(approved)
    assert await pending_signals(bus) == 0
    assert await bus.redis.xlen(Stream.DEAD_LETTER.value) == 0


async def test_killed_before_the_batch_commits_every_signal_is_decided_once(
    bus: Bus, risk_env: dict[str, str], tmp_path: Path
) -> None:
    for sig in signals("kill-before"):
        await bus.publish(sig)
    blocker = psycopg.connect(conninfo(risk_env), connect_timeout=5)
    pipeline = Pipeline(risk_env, tmp_path, **LIMITS)
    try:
        blocker.execute("LOCK TABLE risk_decisions IN EXCLUSIVE MODE")  # until rollback
        pipeline.start("risk_manager")
        await eventually_async(
            lambda: waiting_to_insert(risk_env, "risk_decisions"),
            "the batch's transaction at its decisions",
        )
        pipeline.kill("risk_manager")  # SIGKILL inside the batch's transaction
        blocker.rollback()
        await eventually_async(
            lambda: not waiting_to_insert(risk_env, "risk_decisions"),
            "the dead transaction rolled back",
        )
        assert decided(risk_env, "kill-before") == 0, "half a batch stayed"
        assert scalar(risk_env, "SELECT count(*) FROM risk_positions") == 0
        assert await orders_on_bus(bus, "kill-before") == []
        assert await pending_signals(bus) == N

        pipeline.start("risk_manager")  # the same consumer: its entries come again
        await eventually_async(
            lambda: decided(risk_env, "kill-before") == N, "decided again", timeout=30
        )
        await eventually_async(lambda: acknowledged(bus), "the read acknowledged", timeout=30)
        await assert_each_decided_once(bus, risk_env, "kill-before")
    finally:
        blocker.close()
        pipeline.stop()


async def test_killed_after_the_batch_committed_before_its_ack_every_signal_is_decided_once(
    bus: Bus, risk_env: dict[str, str], tmp_path: Path
) -> None:
    for sig in signals("kill-after"):
        await bus.publish(sig)
    blocker = psycopg.connect(conninfo(risk_env), connect_timeout=5)
    pipeline = Pipeline(risk_env, tmp_path, **LIMITS)
    paused = False
    try:
        blocker.execute("LOCK TABLE risk_decisions IN EXCLUSIVE MODE")
        pipeline.start("risk_manager")
        await eventually_async(
            lambda: waiting_to_insert(risk_env, "risk_decisions"),
            "the batch's transaction at its decisions",
        )
        # Redis takes no write now: the orders' XADD and the XACK after the commit wait
        await bus.redis.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
        paused = True
        blocker.rollback()  # the batch commits
        await eventually_async(lambda: decided(risk_env, "kill-after") == N, "the batch committed")
        pipeline.kill("risk_manager")  # SIGKILL after the commit, before the XACK
        await bus.redis.execute_command("CLIENT", "UNPAUSE")
        paused = False
        assert await pending_signals(bus) == N, "acknowledged before the kill"
        assert await orders_on_bus(bus, "kill-after") == [], "published before the kill"

        pipeline.start("risk_manager")  # redelivered: each signal finds its decision
        await eventually_async(lambda: acknowledged(bus), "the read acknowledged", timeout=30)
        await assert_each_decided_once(bus, risk_env, "kill-after")
    finally:
        if paused:
            await bus.redis.execute_command("CLIENT", "UNPAUSE")
        blocker.close()
        pipeline.stop()


# -- order results ---------------------------------------------------------------------
WIDE = {"MAX_POSITION_PCT": "10", "MAX_EXPOSURE_PCT": "100"}


def results_for(prefix: str, orders: list[dict[str, Any]]) -> list[OrderResult]:
    """Fills, a loss and a profit closed, a venue rejection, the same fill again under
    another event id, a result for an order this book does not know, and a late fill of
    the position the rejection released earlier in the same read."""
    first, second, third = orders

    def result(index: int, order: dict[str, Any], status: Any, **kw: Any) -> OrderResult:
        return OrderResult(
            event_id=f"{prefix}-r{index}",
            order_id=order["order_id"],
            symbol=order["symbol"],
            side=order["side"],
            status=status,
            fill_price=order["price"],
            quantity=order["quantity"],
            timestamp=time.time(),
            **kw,
        )

    stranger = {**first, "order_id": f"{prefix}-stranger"}
    return [
        result(0, first, "filled", fee=0.1),
        result(1, second, "filled", fee=0.2),
        result(2, first, "closed", fee=0.1, realized_pnl=-5.0),
        result(3, third, "rejected"),
        result(4, second, "filled", fee=0.2),  # the same (order, status) again
        result(5, stranger, "filled", fee=0.3),
        result(6, second, "closed", fee=0.2, realized_pnl=7.0),
        result(7, third, "filled", fee=0.05),  # a late fill of a released position
    ]


def ledger_rows(env: dict[str, str], prefix: str) -> list[tuple[Any, ...]]:
    """The ``equity`` rows of these orders in the order written, and their positions."""
    rows = query(
        env,
        "SELECT right(p.signal_id, 1), e.realized_pnl, e.reason, p.status, p.fees,"
        " p.realized_pnl, p.quantity, p.entry_price"
        " FROM equity e JOIN risk_positions p"
        " ON e.event_key LIKE 'result:' || p.order_id || ':%%'"
        " WHERE p.signal_id LIKE %s ORDER BY e.id",
        (f"{prefix}-%",),
    )
    return rows


def result_transactions(env: dict[str, str], prefix: str) -> int:
    return int(
        scalar(
            env,
            "SELECT count(DISTINCT e.recorded_at) FROM equity e JOIN risk_positions p"
            " ON e.event_key LIKE 'result:' || p.order_id || ':%%' WHERE p.signal_id LIKE %s",
            (f"{prefix}-%",),
        )
    )


async def results_pending(bus: Bus) -> int:
    info: Any = await bus.redis.xpending(Stream.ORDER_RESULTS.value, "risk_manager")
    return int(info["pending"])


async def results_done(bus: Bus, count: int) -> bool:
    groups: Any = await bus.redis.xinfo_groups(Stream.ORDER_RESULTS.value)
    group = next(g for g in groups if g["name"] in ("risk_manager", b"risk_manager"))
    return int(group["entries-read"] or 0) >= count and int(group["pending"]) == 0


async def reserved(
    bus: Bus, env: dict[str, str], tmp_path: Path
) -> dict[str, list[dict[str, Any]]]:
    """Three positions reserved for "rb" and three for "rs", on the same prices."""
    for prefix, symbols in (
        ("rb", ["A_USDT", "B_USDT", "C_USDT"]),
        ("rs", ["D_USDT", "E_USDT", "F_USDT"]),
    ):
        for sig in signals(prefix, symbols):
            await bus.publish(sig)
    pipeline = Pipeline(env, tmp_path, **WIDE).start("risk_manager")
    try:
        await eventually_async(
            lambda: decided(env, "rb") + decided(env, "rs") == 6, "six decided", timeout=30
        )
    finally:
        pipeline.stop()
    return {p: await orders_on_bus(bus, p) for p in ("rb", "rs")}


async def test_a_read_of_results_books_what_one_result_at_a_time_books(
    bus: Bus, risk_env: dict[str, str], tmp_path: Path
) -> None:
    orders = await reserved(bus, risk_env, tmp_path)
    batch = results_for("rb", orders["rb"])
    for result in batch:  # on the stream while risk_manager is down: one read
        await bus.publish(result)
    pipeline = Pipeline(risk_env, tmp_path, **WIDE).start("risk_manager")
    try:
        await eventually_async(lambda: results_done(bus, len(batch)), "the read applied")
        for count, result in enumerate(results_for("rs", orders["rs"]), start=len(batch) + 1):
            await bus.publish(result)
            await eventually_async(lambda c=count: results_done(bus, c), "the result applied")
        assert result_transactions(risk_env, "rb") == 1, "the read was not one transaction"
        assert result_transactions(risk_env, "rs") == 6
        assert len(ledger_rows(risk_env, "rb")) == 6  # the copy and the stranger: no row
        assert ledger_rows(risk_env, "rb") == ledger_rows(risk_env, "rs")
        assert query(
            risk_env,
            "SELECT status, fees, realized_pnl FROM risk_positions"
            " WHERE signal_id LIKE 'rb-%%' ORDER BY signal_id",
        ) == [("closed", 0.2, -5.0), ("closed", 0.4, 7.0), ("released", 0.05, 0.0)]
        assert await bus.redis.xlen(Stream.DEAD_LETTER.value) == 0
    finally:
        pipeline.stop()


@pytest.mark.parametrize("moment", ["before the commit", "after the commit, before the ack"])
async def test_killed_inside_a_batch_of_results_each_result_applies_once(
    bus: Bus, risk_env: dict[str, str], tmp_path: Path, moment: str
) -> None:
    orders = await reserved(bus, risk_env, tmp_path)
    batch = results_for("rb", orders["rb"])
    for result in batch:
        await bus.publish(result)
    blocker = psycopg.connect(conninfo(risk_env), connect_timeout=5)
    pipeline = Pipeline(risk_env, tmp_path, **WIDE)
    paused = False
    try:
        blocker.execute("LOCK TABLE equity IN EXCLUSIVE MODE")
        pipeline.start("risk_manager")
        await eventually_async(
            lambda: waiting_to_insert(risk_env, "equity"),
            "the batch's transaction at its equity rows",
        )
        if moment.startswith("after"):
            await bus.redis.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
            paused = True
            blocker.rollback()
            await eventually_async(
                lambda: len(ledger_rows(risk_env, "rb")) == 6, "the batch committed"
            )
        pipeline.kill("risk_manager")  # SIGKILL
        if paused:
            await bus.redis.execute_command("CLIENT", "UNPAUSE")
            paused = False
        else:
            blocker.rollback()
            await eventually_async(
                lambda: not waiting_to_insert(risk_env, "equity"),
                "the dead transaction rolled back",
            )
            assert ledger_rows(risk_env, "rb") == [], "half a batch stayed"
        assert await results_pending(bus) == len(batch), "acknowledged before the kill"

        pipeline.start("risk_manager")  # the same consumer: its entries come again
        await eventually_async(lambda: results_done(bus, len(batch)), "the read applied")
        assert [row[:3] for row in ledger_rows(risk_env, "rb")] == [
            ("0", -0.1, "filled"),
            ("1", -0.2, "filled"),
            ("0", -5.1, "closed"),
            ("2", 0.0, "rejected"),
            ("1", 6.8, "closed"),
            ("2", -0.05, "filled"),
        ]
        assert query(
            risk_env,
            "SELECT status, fees, realized_pnl FROM risk_positions"
            " WHERE signal_id LIKE 'rb-%%' ORDER BY signal_id",
        ) == [("closed", 0.2, -5.0), ("closed", 0.4, 7.0), ("released", 0.05, 0.0)]
        assert await bus.redis.xlen(Stream.DEAD_LETTER.value) == 0
    finally:
        if paused:
            await bus.redis.execute_command("CLIENT", "UNPAUSE")
        blocker.close()
        pipeline.stop()


async def test_a_breaker_trip_in_a_read_of_results_goes_one_result_at_a_time(
    bus: Bus, risk_env: dict[str, str], tmp_path: Path
) -> None:
    orders = (await reserved(bus, risk_env, tmp_path))["rb"]
    first, second, _ = orders
    common: dict[str, Any] = {"fill_price": 100.0, "quantity": 10.0, "timestamp": time.time()}

    def result(index: int, order: dict[str, Any], status: Any, **kw: Any) -> OrderResult:
        return OrderResult(
            event_id=f"trip-r{index}",
            order_id=order["order_id"],
            symbol=order["symbol"],
            side=order["side"],
            status=status,
            **common,
            **kw,
        )

    batch = [
        result(0, first, "filled", fee=0.1),
        result(1, first, "closed", realized_pnl=-600.0),  # 6 % of 10,000: the breaker trips
        result(2, second, "filled", fee=0.2),
        result(3, second, "closed", realized_pnl=10.0),
    ]
    for event in batch:
        await bus.publish(event)
    pipeline = Pipeline(risk_env, tmp_path, **WIDE).start("risk_manager")
    try:
        await eventually_async(lambda: results_done(bus, len(batch)), "the read applied")
        assert result_transactions(risk_env, "rb") == 4, "the trip did not go one at a time"
        assert [row[:3] for row in ledger_rows(risk_env, "rb")] == [
            ("0", -0.1, "filled"),
            ("0", -600.0, "closed"),
            ("1", -0.2, "filled"),
            ("1", 10.0, "closed"),
        ]
        trips = query(risk_env, "SELECT kind FROM risk_events WHERE kind = 'circuit_breaker'")
        assert len(trips) == 1
        assert query(risk_env, "SELECT breaker_tripped_at IS NOT NULL FROM risk_days") == [(True,)]

        async def alerts() -> list[str]:
            entries: Any = await bus.redis.xrange(Stream.ALERTS.value)
            return [json.loads(fields[b"event"])["kind"] for _, fields in entries]

        await eventually_async(alerts, "the alert published")
        assert await alerts() == ["circuit_breaker"]
        assert pipeline.procs["risk_manager"].status()["book"]["breaker_active"] is True
        assert await bus.redis.xlen(Stream.DEAD_LETTER.value) == 0
    finally:
        pipeline.stop()
