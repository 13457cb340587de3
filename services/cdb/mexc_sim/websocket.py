"""The ``/edge`` WebSocket: MEXC's contract request/reply protocol on one session."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from cdb.mexc_sim.market import INTERVAL_MINUTES
from cdb.mexc_sim.sessions import Session, Subscription
from cdb.mexc_sim.simulator import Simulator, frame

__all__ = ["serve_session"]

log = logging.getLogger("cdb.mexc_sim.ws")

CHANNELS = ("deal", "ticker", "kline", "tickers", "depth")


async def _writer(session: Session) -> None:
    while True:
        payload = await session.queue.get()
        if payload is None:
            return
        if isinstance(payload, bytes):
            await session.websocket.send_bytes(payload)
        else:
            await session.websocket.send_text(payload)


async def serve_session(sim: Simulator, websocket: WebSocket) -> None:
    """Accept, then answer requests until the client leaves or the server closes it."""
    await websocket.accept()
    session = Session(websocket)
    sim.sessions.add(session)
    sim.stats["connections_total"] += 1
    writer = asyncio.create_task(_writer(session))
    try:
        while not session.closing:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None:
                text = (message.get("bytes") or b"").decode("utf-8", "replace")
            reply = handle_request(sim, session, text)
            if reply is not None:
                session.offer(reply)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        session.closing = True
        sim.sessions.discard(session)
        with contextlib.suppress(asyncio.QueueFull):
            session.queue.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer, timeout=1.0)
        writer.cancel()


def handle_request(sim: Simulator, session: Session, text: str) -> str | None:
    """One client frame → the reply frame, or ``None`` (MEXC ignores unknown methods)."""
    now = sim.exchange_ms()
    try:
        request = json.loads(text)
    except ValueError:
        return frame("rs.error", "request is not valid JSON", now)
    if not isinstance(request, dict) or not isinstance(request.get("method"), str):
        return frame("rs.error", 'request needs a "method"', now)
    method: str = request["method"]
    param = request.get("param") or {}
    if not isinstance(param, dict):
        return frame("rs.error", '"param" must be an object', now)
    if method == "ping":
        session.last_ping = time.monotonic()
        return frame("pong", now, now)
    verb, _, channel = method.partition(".")
    if verb not in ("sub", "unsub") or channel not in CHANNELS:
        return None  # the wire: an unknown method gets no reply and the socket stays open
    if channel == "depth":
        return frame("rs.error", "depth is not simulated by mexc_sim", now)
    subscription, error = _subscription(sim, channel, param, unsubscribing=verb == "unsub")
    if error is not None:
        return frame("rs.error", error, now)
    assert subscription is not None
    if verb == "unsub":
        if channel == "kline" and not subscription[2]:
            session.subscriptions = {
                s
                for s in session.subscriptions
                if not (s[0] == "kline" and s[1] == subscription[1])
            }
        else:
            session.subscriptions.discard(subscription)
        return frame(f"rs.{method}", "success", now)
    cap = sim.faults.max_subs_per_connection
    if (
        cap is not None
        and subscription not in session.subscriptions
        and len(session.subscriptions) >= cap
    ):
        sim.stats["subscriptions_refused"] += 1
        return frame("rs.error", f"subscription limit reached: {cap} per connection", now)
    session.subscriptions.add(subscription)
    return frame(f"rs.{method}", "success", now)


def _subscription(
    sim: Simulator, channel: str, param: dict[str, Any], *, unsubscribing: bool
) -> tuple[Subscription | None, str | None]:
    if channel == "tickers":
        return ("tickers", "", ""), None
    symbol = param.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        return None, 'param error: "symbol" is required'
    if symbol not in sim.market.states:
        return None, f"Contract [{symbol}] not exists"
    interval = ""
    if channel == "kline":
        interval = param.get("interval") or ("" if unsubscribing else "Min1")
        if not isinstance(interval, str) or (interval and interval not in INTERVAL_MINUTES):
            return None, f"interval [{interval}] not supported"
    return (channel, symbol, interval), None
