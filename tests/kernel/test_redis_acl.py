"""Nothing trusted that was not authorised: Redis ACLs per service, and execution_service
executes only orders risk_manager approved.

* Every service's own Redis user may append only to the streams it owns: a forged order
  (from any service but risk_manager) and a forged control event (from any service but
  the operator) are refused by Redis itself, and so is every other foreign stream.
* Under those users the bus works: each service reads, acknowledges, counts failures and
  dead-letters on the streams it consumes.
* An order on ``cdb:orders`` that no approved decision row backs (a forged 1e9 USDT
  order written with the admin password), or that differs from the approved one, is
  refused and dead-lettered; nothing is filled.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from cdb.core.acl import ACCESS
from cdb.core.bus import Bus, Consumer
from cdb.core.events import (
    STREAMS,
    Alert,
    ApprovalDecision,
    ApprovalRequest,
    Candle,
    Control,
    ControlSettings,
    Event,
    MarketData,
    MlSignal,
    Order,
    OrderResult,
    Signal,
    Stream,
)
from tests.support import (
    ACL_PASSWORDS,
    FAST_BUS,
    ServiceProcess,
    approve,
    as_user,
    eventually_async,
    group_caught_up,
    scalar,
)

NOW = time.time()
ORDER = Order(
    order_id="ord-forged",
    signal_id="sig-forged",
    symbol="BTC_USDT",
    side="long",
    quantity=1e7,
    notional=1e9,
    price=100.0,
    stop_loss=1.0,
    timestamp=NOW,
)
SAMPLES: dict[Stream, Event] = {
    Stream.MARKET_DATA: MarketData(
        symbol="BTC_USDT", price=1.0, volume=1.0, pct_change=5.0, timestamp=int(NOW)
    ),
    Stream.CANDLES: Candle(
        symbol="BTC_USDT",
        open_time=int(NOW) // 60 * 60,
        open=1.0,
        high=1.0,
        low=1.0,
        close=1.0,
        volume=1.0,
        turnover=1.0,
    ),
    Stream.SIGNALS: Signal(
        signal_id="s",
        symbol="BTC_USDT",
        side="long",
        confidence=0.5,
        reason="r",
        price=1.0,
        pct_change=5.0,
        timestamp=NOW,
    ),
    Stream.ML_SIGNALS: MlSignal(
        signal_id="m",
        symbol="BTC_USDT",
        side="long",
        model="m",
        model_version="1",
        confidence=0.9,
        price=1.0,
        timestamp=NOW,
    ),
    Stream.ORDERS: ORDER,
    Stream.ORDER_RESULTS: OrderResult(
        order_id="o", symbol="BTC_USDT", side="long", status="filled", timestamp=NOW
    ),
    Stream.ALERTS: Alert(kind="k", message="m", source="s", timestamp=NOW),
    Stream.CONTROL: Control(
        bot="forged",
        generation=10**9,
        config_hash="forged",
        settings=ControlSettings(max_daily_loss_pct=100.0, paused=False),
        timestamp=NOW,
    ),
    Stream.APPROVALS: ApprovalRequest(
        event_id="approval-request-ord-forged",
        order=ORDER,
        exposure_after_usdt=1e9,
        exposure_after_pct=100.0,
        equity_usdt=1e4,
        expires_at=NOW + 60,
        timestamp=NOW,
    ),
    Stream.APPROVAL_DECISIONS: ApprovalDecision(
        order_id="ord-forged", decision="approve", actor="forger", timestamp=NOW
    ),
}


def user_bus(redis_proc: Any, user: str) -> Bus:
    client = Redis(
        host=redis_proc.host, port=redis_proc.port, username=user, password=ACL_PASSWORDS[user]
    )
    bus = Bus(client, publish_timeout_s=1.0)
    return bus


@pytest.mark.parametrize("user", sorted(ACCESS))
async def test_a_service_writes_only_the_streams_it_owns(
    user: str, redis_proc: Any, redis_only_env: dict[str, str], bus: Bus
) -> None:
    mine = user_bus(redis_proc, user)
    owned = set(ACCESS[user].writes)
    try:
        for stream, event in SAMPLES.items():
            if stream in owned:
                await mine.publish(event, stream)
                assert await bus.redis.xlen(stream.value) == 1
            else:
                with pytest.raises(redis_errors.NoPermissionError):
                    await mine.publish(event, stream)
                assert await bus.redis.xlen(stream.value) == 0, f"{user} wrote {stream}"
        # nor another group's bookkeeping, nor anything outside the bus
        for key in ("cdb:done:risk_manager:x", "cdb:operator:published:x", "other"):
            if key.startswith(f"cdb:done:{user}:") or (
                user == "operator" and key.startswith("cdb:operator:")
            ):
                continue
            with pytest.raises(redis_errors.NoPermissionError):
                await mine.redis.set(key, b"1")
        with pytest.raises(redis_errors.NoPermissionError):
            await mine.redis.flushall()
    finally:
        await mine.close()


def test_a_forged_order_and_a_forged_control_event_are_refused_by_redis() -> None:
    """Who may write the two streams that move money and configuration: one user each."""
    order_writers = {u for u, a in ACCESS.items() if Stream.ORDERS in a.writes}
    control_writers = {u for u, a in ACCESS.items() if Stream.CONTROL in a.writes}
    assert order_writers == {"risk_manager"}
    assert control_writers == {"operator", "console"}  # the console: the demo's control path
    decision_writers = {u for u, a in ACCESS.items() if Stream.APPROVAL_DECISIONS in a.writes}
    assert decision_writers == {"console"}
    assert STREAMS[Order] == Stream.ORDERS  # the stream the samples above were refused on


@pytest.mark.parametrize("user", sorted(u for u in ACCESS if ACCESS[u].groups))
async def test_each_service_consumes_its_streams_under_its_own_user(
    user: str, redis_proc: Any, redis_only_env: dict[str, str], bus: Bus
) -> None:
    mine = user_bus(redis_proc, user)
    typed = [s for s in ACCESS[user].reads if s is not Stream.DEAD_LETTER]
    try:
        for stream in typed:
            event = SAMPLES[stream]
            await bus.publish(event, stream)  # the owner (admin here) writes it
            bad = event.model_copy(update={"event_id": f"bad-{stream.value}"})
            await bus.publish(bad, stream)
            seen: list[str] = []

            async def handle(e: Any, seen: list[str] = seen) -> None:
                if e.event_id.startswith("bad-"):
                    raise ValueError("refuse it")
                seen.append(e.event_id)

            consumer = Consumer(
                stream, type(event), handle, group=user, block_ms=100, max_attempts=2
            )
            stop = asyncio.Event()
            task = asyncio.create_task(consumer.run(mine, "c1", stop))
            await eventually_async(
                lambda s=stream: group_caught_up(bus.redis, s.value, user),  # type: ignore[misc]
                timeout=20,
                what=f"{user} consumed {stream.value}",
            )
            stop.set()
            await asyncio.wait_for(task, 10)
            assert seen == [event.event_id]
            assert await bus.redis.exists(f"cdb:done:{user}:{event.event_id}") == 1
        letters: Any = await bus.redis.xrange(Stream.DEAD_LETTER.value)
        assert len(letters) == len(typed)  # the bad one of each stream
        if Stream.DEAD_LETTER in ACCESS[user].reads:  # the notifier: raw entries, own group
            dead = Stream.DEAD_LETTER.value
            await mine.redis.xgroup_create(dead, f"{user}-letters", id="0", mkstream=True)
            read: Any = await mine.redis.xreadgroup(f"{user}-letters", "c1", {dead: ">"})
            ids = [entry_id for entry_id, _ in read[0][1]]
            assert len(ids) == len(typed)
            assert await mine.redis.xack(dead, f"{user}-letters", *ids) == len(ids)
    finally:
        await mine.close()


@pytest.mark.slow
async def test_execution_service_fills_only_what_risk_manager_approved(
    service_env: dict[str, str], bus: Bus, tmp_path: Path
) -> None:
    env = as_user({**service_env, **FAST_BUS}, "execution_service")
    with ServiceProcess("cdb.execution_service", env, tmp_path) as proc:
        await asyncio.to_thread(proc.wait_healthy, 60, ("ok", "stale"))
        # forged with the admin password (past the ACLs): no decision row backs it
        await bus.publish(ORDER)
        # approved, then altered on the way: a hundred times the notional
        genuine = ORDER.model_copy(
            update={
                "event_id": "ord-real",
                "order_id": "ord-real",
                "signal_id": "sig-real",
                "quantity": 1.0,
                "notional": 100.0,
            }
        )
        await asyncio.to_thread(approve, service_env, genuine)
        altered = genuine.model_copy(update={"event_id": "ord-real-x", "notional": 10_000.0})
        await bus.publish(altered)
        await bus.publish(genuine)

        async def handled() -> bool:
            return await group_caught_up(bus.redis, Stream.ORDERS.value, "execution_service")

        await eventually_async(handled, what="the three orders handled")
        assert scalar(service_env, "SELECT array_agg(order_id) FROM orders") == ["ord-real"]
        assert scalar(service_env, "SELECT count(*) FROM fills") == 1
        letters: Any = await bus.redis.xrange(Stream.DEAD_LETTER.value)
        reasons = sorted(fields[b"reason"].decode() for _, fields in letters)
        assert len(reasons) == 2
        assert reasons[0].startswith("refused: no approved risk decision"), reasons
        assert reasons[1].startswith("refused: the order differs"), reasons


def test_the_chart_runs_redis_with_the_same_users_and_no_password_in_argv(
    tmp_path: Path,
) -> None:
    """The chart's Redis loads the ACL file ``python -m cdb.core.acl`` writes from its
    Secret, for exactly the users of ``cdb.core.acl``; every service logs in as its own."""
    import yaml

    from cdb.core.acl import write_acl_file
    from tests.support import acl_env
    from tests.support.chart import helm_template

    result = helm_template("--set", "mlAdvisor.enabled=true", crds=False)
    assert result.returncode == 0, result.stderr
    objs = [d for d in yaml.safe_load_all(result.stdout) if d]
    redis = next(o for o in objs if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "redis")
    pod = redis["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"] == ["python", "-m", "cdb.core.acl", "/tmp/users.acl"]
    variables = {e["name"] for e in init["env"]}
    assert variables == {"REDIS_PASSWORD", *(f"REDIS_PASSWORD_{u.upper()}" for u in ACCESS)}
    container = pod["containers"][0]
    argv = " ".join(container.get("command", []) + container.get("args", []))
    assert "--aclfile /tmp/users.acl" in argv and "requirepass" not in argv
    assert "PASSWORD" not in argv and "$(" not in argv
    for obj in objs:
        if obj["kind"] != "Deployment" or obj["metadata"]["name"] not in (
            "signal-engine", "risk-manager", "execution-service", "ml-advisor", "bot-rest"
        ):  # fmt: skip
            continue
        env = {e["name"]: e for e in obj["spec"]["template"]["spec"]["containers"][0]["env"]}
        user = env["REDIS_USERNAME"]["value"]
        assert user == obj["metadata"]["name"].replace("-", "_")
        assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == f"{user}-password"
    # the file the init container writes: private, one line per user, no clear password
    path = tmp_path / "users.acl"
    write_acl_file(path, acl_env())
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert [line.split()[1] for line in text.splitlines()] == ["default", *ACCESS]
    assert not any(password in text for password in ACL_PASSWORDS.values())


async def test_the_viewer_reads_every_stream_and_writes_none(
    redis_proc: Any, redis_only_env: dict[str, str], bus: Bus
) -> None:
    """The demo's view and signal count read as ``viewer``: every stream, nothing else."""
    viewer = user_bus(redis_proc, "viewer")
    try:
        for stream, event in SAMPLES.items():
            await bus.publish(event, stream)
            assert len(await viewer.redis.xrevrange(stream.value, count=1)) == 1
            reply: Any = await viewer.redis.xread({stream.value: "0"}, count=1)
            assert reply and len(reply[0][1]) == 1
            with pytest.raises(redis_errors.NoPermissionError):
                await viewer.redis.xack(stream.value, "g", "0-1")
    finally:
        await viewer.close()
