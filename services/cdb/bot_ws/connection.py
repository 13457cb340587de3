"""One WebSocket to MEXC carrying one chunk of symbols: subscribe, ping, read, reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import websockets
from websockets.asyncio.client import ClientConnection

from cdb.bot_ws.frames import (
    Ack,
    DealPush,
    ErrorReply,
    MalformedFrame,
    Pong,
    ServerFrame,
    exchange_time,
    parse_frame,
    ping_request,
    sub_request,
)
from cdb.bot_ws.screener import FrameTimeJump, Screener
from cdb.bot_ws.settings import BotWsSettings
from cdb.core.bus import Backoff, sleep_unless

__all__ = ["ChunkConnection", "ConnectionHooks", "Subscribing"]

log = logging.getLogger("cdb.bot_ws.connection")


@dataclass
class ConnectionHooks:
    """What a connection reports to the service (metrics, health)."""

    on_ticks: Callable[[int], None] = lambda _: None
    on_malformed: Callable[[str], None] = lambda _: None
    on_time_jump: Callable[[str], None] = lambda _: None
    on_open: Callable[[], None] = lambda: None
    on_close: Callable[[], None] = lambda: None
    on_reconnect: Callable[[], None] = lambda: None


@dataclass
class Subscribing:
    """A fresh socket goes live once every ``sub.deal`` sent on it has its reply.

    MEXC answers requests in order and its ack names no symbol, so the replies are
    counted. The chunk goes live at the time of the *last* reply: a symbol subscribed
    after a push round has missed that round's deals, so the minute of the last reply
    is the newest one any of the chunk's symbols may have seen only in part (it comes
    from REST). Going live at the first reply trusted a minute the later symbols had
    not been subscribed for when it began.
    """

    pending: int

    def live_at(self, frame: ServerFrame) -> int | None:
        """The exchange time (ms) the chunk went live, when ``frame`` completes it."""
        if isinstance(frame, Ack) and frame.method == "sub.deal":
            self.pending -= 1
        elif isinstance(frame, ErrorReply) and "no response" not in frame.message:
            self.pending -= 1  # a refused subscription (limit, unknown contract) is a reply
        return exchange_time(frame) if self.pending <= 0 else None


@dataclass
class ChunkConnection:
    index: int
    symbols: list[str]
    settings: BotWsSettings
    screener: Screener
    hooks: ConnectionHooks
    stop: asyncio.Event
    connected: bool = False
    sessions: int = 0
    last_data_at: float = field(default_factory=time.monotonic)
    last_pong_at: float = 0.0
    refused: list[str] = field(default_factory=list)

    async def run(self) -> None:
        """Connect and serve until stopped; reconnect with jittered exponential backoff."""
        backoff = Backoff(base=0.2, cap=self.settings.reconnect_max_s)
        while not self.stop.is_set():
            try:
                async with websockets.connect(
                    self.settings.mexc_ws_url,
                    ping_interval=None,  # MEXC wants its own JSON ping, not protocol pings
                    open_timeout=10,
                    close_timeout=2,
                    max_size=2**24,
                    max_queue=4096,
                ) as ws:
                    if await self._session(ws):
                        backoff.reset()
            except (OSError, TimeoutError, websockets.WebSocketException) as error:
                log.warning(
                    "connection failed",
                    extra={"chunk": self.index, "error": f"{type(error).__name__}: {error}"[:300]},
                )
            finally:
                if self.connected:
                    self.connected = False
                    self.hooks.on_close()
            if self.stop.is_set():
                return
            self.hooks.on_reconnect()
            delay = backoff.next_delay()
            log.info("reconnecting", extra={"chunk": self.index, "in_s": round(delay, 3)})
            await sleep_unless(self.stop, delay)

    async def _session(self, ws: ClientConnection) -> bool:
        """One connection's life; ``True`` when it carried data (backoff resets)."""
        self.sessions += 1
        self.connected = True
        self.hooks.on_open()
        self.last_data_at = time.monotonic()
        subscribing = Subscribing(pending=len(self.symbols))
        for symbol in self.symbols:
            await ws.send(sub_request("deal", symbol))
        keeper = asyncio.create_task(self._keepalive(ws), name=f"bot-ws-ping-{self.index}")
        had_data = False
        announced = False
        try:
            async for message in ws:
                try:
                    frame = parse_frame(message)
                except MalformedFrame as error:
                    self.hooks.on_malformed(str(error))
                    continue
                except Exception as error:  # a parser bug: one frame lost, not the socket
                    log.exception("frame parser failed", extra={"chunk": self.index})
                    self.hooks.on_malformed(f"parser failed: {type(error).__name__}")
                    continue
                try:
                    if not announced:
                        live_ms = subscribing.live_at(frame)
                        if live_ms is not None:
                            self.screener.connected(self.symbols, live_ms, self.index)
                            announced = True
                    if isinstance(frame, DealPush):
                        if not announced:
                            continue
                        self.hooks.on_ticks(self.screener.on_frame(frame, self.index))
                        self.last_data_at = time.monotonic()
                        had_data = True
                        continue
                    self.screener.on_frame(frame, self.index)
                except FrameTimeJump as jump:  # the frame is dropped, the clock stays put
                    self.hooks.on_time_jump(str(jump))
                    continue
                if isinstance(frame, Pong):
                    self.last_pong_at = time.monotonic()
                elif isinstance(frame, ErrorReply):
                    self.refused.append(frame.message)
                    del self.refused[:-20]
                    log.warning(
                        "exchange error", extra={"chunk": self.index, "text": frame.message}
                    )
                    if "no response" in frame.message:  # MEXC's ping-timeout notice
                        break
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        return had_data

    async def _keepalive(self, ws: ClientConnection) -> None:
        """Ping on a timer from the last ping *sent*; close a socket gone quiet."""
        settings = self.settings
        step = min(1.0, settings.ping_interval_s)
        last_ping = 0.0
        while True:
            now = time.monotonic()
            if self.stop.is_set():
                await ws.close()
                return
            waiting = last_ping and self.last_pong_at < last_ping
            if waiting and now - last_ping > settings.pong_timeout_s:
                log.warning("no pong, reconnecting", extra={"chunk": self.index})
                await ws.close()
                return
            if now - last_ping >= settings.ping_interval_s:
                await ws.send(ping_request())
                last_ping = now
            if now - self.last_data_at > settings.stale_after_s:
                log.warning(
                    "no data pushed, reconnecting",
                    extra={"chunk": self.index, "silent_s": round(now - self.last_data_at, 1)},
                )
                await ws.close()
                return
            await sleep_unless(self.stop, step)
