"""The simulator: the market, the sim clock, the connected sessions, faults and the push loop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import time
from collections.abc import Iterable
from typing import Any

from cdb.mexc_sim.config import Faults, SimConfig
from cdb.mexc_sim.market import INTERVAL_MINUTES, Deal, Market, aggregate
from cdb.mexc_sim.ratelimit import SlidingWindow
from cdb.mexc_sim.sessions import Session

__all__ = ["Simulator", "frame"]

log = logging.getLogger("cdb.mexc_sim")


def frame(channel: str, data: Any, ts: int, symbol: str | None = None) -> str:
    """A server frame in the 2025+ wire key order (``symbol`` first when present)."""
    body: dict[str, Any] = {}
    if symbol is not None:
        body["symbol"] = symbol
    body["data"] = data
    body["channel"] = channel
    body["ts"] = ts
    return json.dumps(body, separators=(",", ":"))


MAX_PENDING_DEALS = 200_000  # a pause longer than this loses the feed (see tick)
STEP_BUDGET_S = 0.05  # market generation per push round or REST call, then serve others

MALFORMED_KINDS = ("truncated", "garbage", "bad_fields", "binary")


class Simulator:
    """Everything behind the one port; the app's routes only call into this."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        start_s = config.start_time if config.start_time is not None else int(time.time())
        self.market = Market(config, start_s // 60 * 60 * 1000)
        self.faults: Faults = config.faults.model_copy()
        self.sessions: set[Session] = set()
        self.limiter = SlidingWindow(config.limits.window_s)
        self._mono0 = time.monotonic()
        self._fault_rng = random.Random(f"faults-{config.seed}")
        self._malformed_sent = 0
        self._last_drop = time.monotonic()
        self._last_tickers = 0.0
        self.pushed_ms = self.market.now_ms
        self._feed_lost = False
        self.stats: dict[str, int] = {
            "connections_total": 0,
            "frames_pushed": 0,
            "deals_pushed": 0,
            "malformed_sent": 0,
            "future_frames_sent": 0,
            "rest_requests": 0,
            "rest_throttled": 0,
            "ping_timeouts": 0,
            "drops": 0,
            "subscriptions_refused": 0,
        }

    # ----- clock ------------------------------------------------------------------------

    def now_ms(self) -> int:
        """The exchange clock: the start time plus real elapsed time times ``speed``."""
        elapsed = time.monotonic() - self._mono0
        return self.market.start_ms + int(elapsed * self.config.speed * 1000)

    def exchange_ms(self) -> int:
        """The time every frame carries: all deals before it have been pushed.

        Pongs and acks never run ahead of the deal stream, so a client that closes
        minutes by the exchange clock never closes one whose deals are still to come.
        """
        return self.pushed_ms

    def price_of(self, symbol: str) -> float | None:
        """The last traded price of ``symbol`` (``None`` for an unknown contract)."""
        state = self.market.states.get(symbol)
        return state.last_price if state else None

    # ----- faults -----------------------------------------------------------------------

    def set_faults(self, **changes: Any) -> Faults:
        """Change faults live (validated); returns the faults now in force."""
        self.faults = Faults(**{**self.faults.model_dump(), **changes})
        return self.faults

    async def drop_connections(self) -> int:
        """Close every client socket now (abnormal close 1011); returns how many."""
        dropped = list(self.sessions)
        for session in dropped:
            await self.close_session(session, 1011, "mexc_sim fault: connection dropped")
        self.stats["drops"] += len(dropped)
        return len(dropped)

    async def close_session(self, session: Session, code: int, reason: str) -> None:
        if session.closing:
            return
        session.closing = True
        self.sessions.discard(session)
        with contextlib.suppress(asyncio.QueueFull):
            session.queue.put_nowait(None)
        with contextlib.suppress(Exception):
            await session.websocket.close(code=code, reason=reason)

    # ----- pushes -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """The push loop: advance the market, fan frames out, enforce the ping rule."""
        while not stop.is_set():
            started = time.monotonic()
            await self.tick()
            spent = time.monotonic() - started
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    stop.wait(), timeout=max(0.0, self.config.push_interval_s - spent)
                )

    async def tick(self) -> None:
        """One push round.

        Paused, deals wait in the market's buffer and arrive on resume (the feed lags).
        When more than ``MAX_PENDING_DEALS`` pile up, they are lost instead, and on resume
        every socket is closed, as a gateway restart would: clients reconnect and take
        the gap from REST, which never lost a bar.
        """
        await self._enforce_ping_rule(self.exchange_ms())
        faults = self.faults
        if faults.drop_every_s and time.monotonic() - self._last_drop >= faults.drop_every_s:
            self._last_drop = time.monotonic()
            await self.drop_connections()
        if faults.push_delay_ms:
            await asyncio.sleep(faults.push_delay_ms / 1000)
        self.market.advance_to(self.now_ms(), budget_s=STEP_BUDGET_S)
        if faults.paused:
            if self.market.pending_deals > MAX_PENDING_DEALS:
                self.market.drain()
                self._feed_lost = True
            return
        if self._feed_lost:
            self._feed_lost = False
            self.market.drain()
            self.pushed_ms = self.market.now_ms
            await self.drop_connections()
            return
        # from here to the end no await: every frame of this round is queued at once
        new = self.market.drain()
        self.pushed_ms = now = self.market.now_ms
        if not self.sessions:
            return
        self._push_deals(new, now)
        self._push_klines(new.keys(), now)
        self._push_tickers(new.keys(), now)
        self._inject_malformed(now)
        self._inject_future(now)

    def _deliver(self, session: Session, payload: str | bytes) -> None:
        if session.offer(payload):
            self.stats["frames_pushed"] += 1
        elif not session.closing:
            log.warning("client too slow, dropping it", extra={"session": session.id})
            session.closing = True
            self.sessions.discard(session)
            asyncio.get_running_loop().create_task(session.websocket.close(code=1008))

    def _push_deals(self, new: dict[str, list[Deal]], now: int) -> None:
        """Push the round's deals minute by minute, each frame stamped in its minute.

        A round can span several sim seconds (at ``--speed 60`` a 0.1 s round is 6 s), so
        stamping every frame ``now`` would let a frame of one symbol carry a time past a
        minute's end while another symbol's deals of that minute are still queued behind
        it; a client closing minutes by the exchange clock (as MEXC's ``ts`` allows, the
        feed being in time order) would then close them short. So every deal of minute
        ``m`` (all symbols) goes out before any of ``m + 1``, in frames whose ``ts`` is the
        round's time capped at the minute's last millisecond: never before its deals,
        never ahead of a deal still to come.
        """
        minutes: dict[int, dict[str, list[Deal]]] = {}
        for symbol, deals in new.items():
            if not deals:
                continue
            first, last = deals[0].t // 60_000, deals[-1].t // 60_000
            if first == last:  # the usual round: one minute
                minutes.setdefault(first, {})[symbol] = deals
                continue
            for minute, run in itertools.groupby(deals, key=lambda d: d.t // 60_000):
                minutes.setdefault(minute, {})[symbol] = list(run)
        subscribed = [(session, session.symbols("deal")) for session in self.sessions]
        for minute in sorted(minutes):
            batch = minutes[minute]
            ts = min(now, (minute + 1) * 60_000 - 1)
            frames: dict[str, str] = {}
            for session, symbols in subscribed:
                for symbol in symbols:
                    group = batch.get(symbol)
                    if not group:
                        continue
                    text = frames.get(symbol)
                    if text is None:
                        text = frame("push.deal", [d.wire() for d in group], ts, symbol)
                        frames[symbol] = text
                    self._deliver(session, text)
                    self.stats["deals_pushed"] += len(group)

    def _push_klines(self, changed: Iterable[str], now: int) -> None:
        changed_set = set(changed)
        for session in list(self.sessions):
            for kind, symbol, interval in list(session.subscriptions):
                if kind != "kline" or symbol not in changed_set:
                    continue
                self._deliver(session, self.kline_frame(symbol, interval, now))

    def kline_frame(self, symbol: str, interval: str, now: int) -> str:
        minutes = INTERVAL_MINUTES[interval]
        span = minutes * 60
        current = self.market.current_bar(symbol).t
        opened = current // span * span
        row = aggregate(self.market.bars_between(symbol, opened, current), minutes)[-1]
        data = {
            "symbol": symbol,
            "interval": interval,
            "t": row["time"],
            "o": row["open"],
            "c": row["close"],
            "h": row["high"],
            "l": row["low"],
            "a": row["amount"],
            "q": row["vol"],
            "ro": row["realOpen"],
            "rc": row["realClose"],
            "rh": row["realHigh"],
            "rl": row["realLow"],
        }
        return frame("push.kline", data, now, symbol)

    def _push_tickers(self, changed: Iterable[str], now: int) -> None:
        changed_set = set(changed)
        due = time.monotonic() - self._last_tickers >= self.config.tickers_interval_s
        rows: list[dict[str, Any]] | None = None
        for session in list(self.sessions):
            for symbol in session.symbols("ticker") & changed_set:
                self._deliver(
                    session, frame("push.ticker", self.market.ticker(symbol), now, symbol)
                )
            if due and ("tickers", "", "") in session.subscriptions:
                if rows is None:
                    rows = [self.market.tickers_row(s) for s in self.market.order]
                self._deliver(session, frame("push.tickers", rows, now))
        if due:
            self._last_tickers = time.monotonic()

    def _inject_future(self, now: int) -> None:
        """Future-dated deal frames (a broken exchange clock), sent *besides* the real ones:
        one deal of the first subscribed symbol at its price, frame and deal stamped
        ``future_ms`` ahead."""
        faults = self.faults
        if not faults.future_frames_next:
            return
        self.faults = faults.model_copy(update={"future_frames_next": 0})
        at = now + faults.future_ms
        for _ in range(faults.future_frames_next):
            for session in list(self.sessions):
                for symbol in sorted(session.symbols("deal"))[:1]:
                    price = self.price_of(symbol) or 1.0
                    deal = {"p": price, "v": 1, "T": 1, "O": 1, "M": 2, "t": at}
                    self._deliver(session, frame("push.deal", [deal], at, symbol))
            self.stats["future_frames_sent"] += 1

    def _inject_malformed(self, now: int) -> None:
        """Malformed frames are sent *besides* the real ones: the market stays whole."""
        faults = self.faults
        count = faults.malformed_next
        if faults.malformed_rate and self._fault_rng.random() < faults.malformed_rate:
            count += 1
        if not count:
            return
        if faults.malformed_next:
            self.faults = faults.model_copy(update={"malformed_next": 0})
        symbol = self.market.order[0]
        for _ in range(count):
            kind = MALFORMED_KINDS[self._malformed_sent % len(MALFORMED_KINDS)]
            self._malformed_sent += 1
            good = frame(
                "push.deal", [{"p": 1.0, "v": 1, "T": 1, "O": 1, "M": 2, "t": now}], now, symbol
            )
            payload: str | bytes
            if kind == "truncated":
                payload = good[: len(good) // 2]
            elif kind == "garbage":
                payload = "\x00not json{"
            elif kind == "bad_fields":
                payload = frame("push.deal", [{"p": "abc", "v": None}], now, symbol)
            else:
                payload = b"\x1f\x8b\x08\x00binary"
            for session in list(self.sessions):
                self._deliver(session, payload)
            self.stats["malformed_sent"] += 1

    async def _enforce_ping_rule(self, now: int) -> None:
        limit = self.faults.ping_timeout_s
        deadline = time.monotonic() - limit
        for session in list(self.sessions):
            if session.last_ping < deadline:
                text = f"more than {limit:g} seconds no response, close the channel"
                session.offer(frame("rs.error", text, now))
                self.stats["ping_timeouts"] += 1
                await asyncio.sleep(0)
                await self.close_session(session, 1000, "ping timeout")

    # ----- introspection ------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "sim_time_ms": self.now_ms(),
            "exchange_ms": self.exchange_ms(),
            "symbols": len(self.market.order),
            "speed": self.config.speed,
            "scenario": self.config.scenario,
            "seed": self.config.seed,
            "deals_generated": self.market.deals_generated,
            "connections": [
                {
                    "id": s.id,
                    "subscriptions": len(s.subscriptions),
                    "symbols": len(s.symbols("deal")),
                }
                for s in sorted(self.sessions, key=lambda s: s.id)
            ],
            "faults": self.faults.model_dump(),
            **self.stats,
        }
