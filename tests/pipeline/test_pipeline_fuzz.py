"""Hypothesis fuzz of every consumer of the three services, as running processes:
malformed and hostile entries on every stream they read. Nothing crashes, every entry that
does not parse is dead-lettered with its reason, and a good event still flows to a fill."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cdb.core.events import EVENT_MODELS, Event, Stream
from tests.support import REDIS_PASSWORD, Pipeline, eventually, market, scalar

pytestmark = pytest.mark.slow

NOW = time.time()
# What each stream's consumers expect, a valid example, and how many groups read it.
BASES: dict[Stream, tuple[str, dict[str, Any], int]] = {
    Stream.MARKET_DATA: (
        "market_data",
        {
            "symbol": "FZ_USDT",
            "price": 1.5,
            "volume": 2e5,
            "pct_change": 5.0,
            "timestamp": int(NOW),
        },
        2,
    ),
    Stream.CANDLES: (
        "candle",
        {
            "symbol": "FZ_USDT",
            "open_time": int(NOW),
            "open": 1.0,
            "high": 1.2,
            "low": 0.9,
            "close": 1.1,
            "volume": 5.0,
            "turnover": 5.0,
        },
        1,
    ),
    Stream.SIGNALS: (
        "signal",
        {
            "signal_id": "fz-sig",
            "symbol": "FZ_USDT",
            "side": "long",
            "confidence": 0.5,
            "reason": "fuzz",
            "price": 1.5,
            "pct_change": 5.0,
            "timestamp": NOW,
        },
        1,
    ),
    Stream.ML_SIGNALS: (
        "ml_signal",
        {
            "signal_id": "fz-ml",
            "symbol": "FZ_USDT",
            "side": "long",
            "model": "m",
            "model_version": "1",
            "confidence": 0.9,
            "price": 1.5,
            "timestamp": NOW,
        },
        1,
    ),
    Stream.ORDERS: (
        "order",
        {
            "order_id": "fz-ord",
            "signal_id": "fz-sig",
            "symbol": "FZ_USDT",
            "side": "long",
            "quantity": 2.0,
            "notional": 3.0,
            "price": 1.5,
            "stop_loss": 1.47,
            "timestamp": NOW,
        },
        1,
    ),
    Stream.ORDER_RESULTS: (
        "order_result",
        {
            "order_id": "fz-unknown",
            "symbol": "FZ_USDT",
            "side": "long",
            "status": "filled",
            "timestamp": NOW,
        },
        1,
    ),
    Stream.CONTROL: (
        "control",
        {"bot": "b", "generation": 1, "config_hash": "h", "settings": {}, "timestamp": NOW},
        3,
    ),
}
HOSTILE = st.sampled_from(
    [
        None,
        "",
        "x" * 5000,
        -1,
        0,
        2**70,
        1e308,
        -1e308,
        True,
        [],
        {},
        "NaN",
        "Infinity",
        "'; DROP TABLE orders;--",
        "bad\u0000nul",
        "\udcff",
        "\uff22\uff34\uff23_USDT",
        1.0000001,
        "BTC_USDT",
    ]
)


@st.composite
def entries(draw: st.DrawFn) -> tuple[Stream, dict[bytes, bytes]]:
    stream = draw(st.sampled_from(list(BASES)))
    kind, base, _ = BASES[stream]
    shape = draw(st.sampled_from(["bytes", "text", "json", "mutate", "mutate", "no_field"]))
    if shape == "bytes":
        return stream, {b"event": draw(st.binary(max_size=300))}
    if shape == "text":
        return stream, {b"event": draw(st.text(max_size=300)).encode("utf-8", "replace")}
    if shape == "no_field":
        return stream, {b"other": b"{}"}
    if shape == "json":
        blob = draw(
            st.dictionaries(
                st.text(max_size=12), st.none() | st.integers() | st.text(max_size=20), max_size=8
            )
        )
        return stream, {b"event": json.dumps(blob).encode()}
    event = {"type": kind, "event_id": f"fz-{draw(st.uuids()).hex}", **base}
    field = draw(st.sampled_from([*event, "extra_field"]))
    if draw(st.booleans()) and field in event:
        del event[field]
    else:
        event[field] = draw(HOSTILE)
    try:
        payload = json.dumps(event, allow_nan=True)
    except ValueError:
        payload = json.dumps({k: str(v) for k, v in event.items()})
    return stream, {b"event": payload.encode("utf-8", "surrogatepass")}


def parses(stream: Stream, fields: dict[bytes, bytes]) -> bool:
    raw = fields.get(b"event")
    model: type[Event] = EVENT_MODELS[BASES[stream][0]]
    try:
        return raw is not None and model.model_validate_json(raw) is not None
    except (ValidationError, ValueError):
        return False


def test_hostile_entries_are_dead_lettered_and_good_events_keep_flowing(
    service_env: dict[str, str], tmp_path: Path, redis_proc: Any
) -> None:
    pipeline = Pipeline(service_env, tmp_path, BUS_MAX_ATTEMPTS="2").start()
    client = redis.Redis(host=redis_proc.host, port=redis_proc.port, password=REDIS_PASSWORD)
    expected_dead = 0

    @settings(
        max_examples=120, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(entry=entries())
    def publish(entry: tuple[Stream, dict[bytes, bytes]]) -> None:
        nonlocal expected_dead
        stream, fields = entry
        client.xadd(stream.value, fields)  # type: ignore[arg-type]
        if not parses(stream, fields):
            expected_dead += BASES[stream][2]

    try:
        publish()
        assert expected_dead > 50

        def drained() -> bool:
            for stream in BASES:
                for group in client.xinfo_groups(stream.value):
                    if group["pending"] or (group.get("lag") or 0) > 0:
                        return False
            return True

        try:
            eventually(drained, "every group drained", timeout=120, every=0.3)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{pipeline.logs()}") from None
        for name, proc in pipeline.procs.items():
            assert proc.proc is not None and proc.proc.poll() is None, f"{name} died"
        dead = client.xrange(Stream.DEAD_LETTER.value)
        assert len(dead) >= expected_dead
        assert all(entry[b"reason"] and entry[b"stream"] for _, entry in dead)
        malformed = sum(1 for _, e in dead if e[b"reason"].startswith((b"malformed", b"entry has")))
        assert malformed == expected_dead  # exactly the unparsable ones, once per group

        # Good events still flow end to end.
        client.xadd(
            Stream.MARKET_DATA.value,
            {b"event": market("GOOD_USDT", 6.0).model_dump_json().encode()},
        )
        eventually(
            lambda: scalar(
                service_env, "SELECT count(*) FROM positions WHERE symbol = 'GOOD_USDT'"
            ),
            "a GOOD_USDT position",
            timeout=60,
            every=0.2,
        )
        assert scalar(service_env, "SELECT count(*) FROM positions WHERE symbol = 'GOOD_USDT'") == 1
        for proc in pipeline.procs.values():
            assert proc.status()["ready"] is True
    finally:
        pipeline.stop()
        client.close()
