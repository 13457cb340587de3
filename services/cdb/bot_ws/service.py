"""The bot_ws service: chunk connections, candle and mover publishing, live lookback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from prometheus_client import Counter, Gauge

from cdb.bot_ws.candles import ClosedCandle
from cdb.bot_ws.chunks import served_chunks
from cdb.bot_ws.connection import ChunkConnection, ConnectionHooks
from cdb.bot_ws.exchange import ContractInfo, ExchangeError, ExchangeRest
from cdb.bot_ws.screener import ClockBounds, Screener
from cdb.bot_ws.settings import BotWsSettings
from cdb.bot_ws.window import WindowStat, market_data_of
from cdb.core.bus import Backoff, Consumer, TransientError, sleep_unless
from cdb.core.control import StreamControl
from cdb.core.events import Candle, Control, Stream, deterministic_id
from cdb.core.logging import ThrottledWarning
from cdb.core.service import Kernel, Service, public_config

__all__ = ["BotWs"]

log = logging.getLogger("cdb.bot_ws")

TICK_S = 0.25
BACKFILL_CONCURRENCY = 8


class BotWsMetrics:
    def __init__(self, kernel: Kernel) -> None:
        r = kernel.metrics.registry
        self.ticks = Counter("bot_ws_ticks_total", "Deals and klines processed", registry=r)
        self.connections = Gauge("bot_ws_connections", "Open WebSockets to MEXC", registry=r)
        self.chunks = Gauge("bot_ws_chunks", "Symbol chunks served by this pod", registry=r)
        self.symbols = Gauge("bot_ws_symbols", "Symbols served by this pod", registry=r)
        self.reconnects = Counter("bot_ws_reconnects_total", "WebSocket reconnects", registry=r)
        self.malformed = Counter(
            "bot_ws_malformed_frames_total", "Frames that could not be parsed", registry=r
        )
        self.time_jumps = Counter(
            "bot_ws_frame_time_jumps_total",
            "Frames refused because their time ran ahead of the local clock or the"
            " connection's recent frames",
            registry=r,
        )
        self.late_deals = Counter(
            "bot_ws_deals_not_applied_total",
            "Deals not applied: late (their minute closed) or of a minute taken from REST",
            registry=r,
        )
        self.backfilled = Counter(
            "bot_ws_backfilled_candles_total", "Candles taken from REST klines", registry=r
        )
        self.last_tick_age = Gauge(
            "bot_ws_last_tick_age_seconds", "Seconds since the newest deal", registry=r
        )
        self.last_tick_age.set_function(kernel.health.age_s)
        self.movers = Gauge(
            "bot_ws_mover_pct_change",
            "pct_change of the current top movers",
            ["symbol", "direction"],
            registry=r,
        )


class BotWs(Service[BotWsSettings]):
    name = "bot_ws"
    uses_database = False

    def __init__(self, settings: BotWsSettings, kernel: Kernel) -> None:
        super().__init__(settings, kernel)
        self.metrics = BotWsMetrics(kernel)
        # a broken feed refuses every frame: one line per 10 s says so (the metrics count all)
        self._warn_time_jump = ThrottledWarning(log, "frame refused: its time cannot be true")
        self._warn_malformed = ThrottledWarning(log, "malformed frame skipped")
        self.rest = ExchangeRest(settings)
        self.screener = Screener({}, settings.lookback_min, settings.close_grace_ms)
        self.connections: list[ChunkConnection] = []
        self.universe_size = 0
        self.lookback_min = settings.lookback_min
        # the live config in the kernel's shape, restored from the control stream at start
        self.live = StreamControl(settings.bot_name)
        self.malformed_examples: list[str] = []
        self.time_jump_examples: list[str] = []
        self._late_seen = 0
        self.published_movers: dict[str, list[dict[str, float | str]]] = {}
        self._backfilling: set[str] = set()
        # one queue, one publisher: candles reach the stream in the order they closed
        self._closed: asyncio.Queue[ClosedCandle] = asyncio.Queue()
        self._backfill_slots = asyncio.Semaphore(BACKFILL_CONCURRENCY)
        self._last_publish = 0.0
        self._last_window_end = 0

    # ----- start-up ---------------------------------------------------------------------

    async def start(self) -> None:
        restored = await self.live.restore(self.kernel.bus, self.name)
        if restored is not None and restored.settings.lookback_min is not None:
            self.lookback_min = restored.settings.lookback_min
            log.info("live config restored", extra={"control": restored.describe()})
        contracts = await self._load_universe()
        sizes = {c.symbol: c.contract_size for c in contracts}
        wanted = self.settings.symbol_list()
        if wanted:
            unknown = [s for s in wanted if s not in sizes]
            if unknown:
                log.error(
                    "symbols not tradable on the exchange, skipped", extra={"symbols": unknown}
                )
        else:
            wanted = [c.symbol for c in contracts]
        self.universe_size = sum(1 for s in dict.fromkeys(wanted) if s in sizes)
        mine = served_chunks(
            wanted,
            sizes,
            self.settings.chunk_size,
            self.settings.pod_index(),
            self.settings.chunk_count,
        )
        served = [s for chunk in mine for s in chunk]
        self.screener = Screener(
            {s: sizes[s] for s in served},
            self.lookback_min,
            self.settings.close_grace_ms,
            chunk_of={s: j for j, chunk in enumerate(mine) for s in chunk},
            bounds=ClockBounds(
                max_rate=self.settings.frame_clock_max_rate,
                max_ahead_ms=int(self.settings.frame_max_ahead_s * 1000),
                max_jump_ms=int(self.settings.frame_max_jump_s * 1000),
            ),
        )
        hooks = ConnectionHooks(
            on_ticks=self._on_ticks,
            on_malformed=self._on_malformed,
            on_time_jump=self._on_time_jump,
            on_open=self.metrics.connections.inc,
            on_close=self.metrics.connections.dec,
            on_reconnect=self.metrics.reconnects.inc,
        )
        self.connections = [
            ChunkConnection(j, chunk, self.settings, self.screener, hooks, self.kernel.stop)
            for j, chunk in enumerate(mine)
        ]
        self.metrics.chunks.set(len(mine))
        self.metrics.symbols.set(len(served))
        log.info(
            "universe split",
            extra={"symbols": self.universe_size, "served": len(served), "chunks": len(mine)},
        )

    async def _load_universe(self) -> list[ContractInfo]:
        backoff = Backoff(base=0.5, cap=10.0)
        while True:
            try:
                return await self.rest.universe()
            except (ExchangeError, OSError, ValueError, KeyError) as error:
                failure = f"{type(error).__name__}: {error}"
            except Exception as error:  # httpx errors: transport, timeout
                failure = f"{type(error).__name__}: {error}"
            delay = backoff.next_delay()
            log.warning("universe unavailable, retrying", extra={"error": failure[:300]})
            await sleep_unless(self.kernel.stop, delay)
            if self.kernel.stop.is_set():
                return []

    # ----- hooks ------------------------------------------------------------------------

    def _on_ticks(self, count: int) -> None:
        """Deals *applied* keep /health fresh: deals refused as late (a clock gone wrong)
        leave it to go stale, so a blind screener never says ok."""
        late = self.screener.deals_ignored - self._late_seen
        if late > 0:
            self._late_seen += late
            self.metrics.late_deals.inc(late)
        if count:
            self.metrics.ticks.inc(count)
            self.kernel.health.touch()

    def _on_time_jump(self, reason: str) -> None:
        self.metrics.time_jumps.inc()
        self.time_jump_examples = [*self.time_jump_examples[-9:], reason[:200]]
        self._warn_time_jump(reason=reason[:300])

    def _on_malformed(self, reason: str) -> None:
        self.metrics.malformed.inc()
        self.malformed_examples = [*self.malformed_examples[-9:], reason[:200]]
        self._warn_malformed(reason=reason[:300])

    async def _on_control(self, event: Control) -> None:
        applied = self.live.apply(event)
        if applied is None:
            # another TradingBot's control (the stream is shared by the namespace: its
            # lookback is not this screener's), a stale one, or nothing new
            log.debug("control changed nothing here", extra={"bot": event.bot})
            return
        lookback = applied.settings.lookback_min
        if lookback is not None and lookback != self.lookback_min:
            log.info("lookback changed", extra={"from": self.lookback_min, "to": lookback})
            self.lookback_min = lookback
            self.screener.set_lookback(lookback)

    # ----- loops ------------------------------------------------------------------------

    def consumers(self) -> Sequence[Consumer[Any]]:
        return [
            self.consumer(
                Stream.CONTROL, Control, self._on_control, start="$", touches_health=False
            )
        ]

    def tasks(self) -> Sequence[Callable[[], Coroutine[Any, Any, None]]]:
        return [
            *(c.run for c in self.connections),
            self._close_and_publish,
            self._backfill,
            self._publish_candles,
        ]

    async def _close_and_publish(self) -> None:
        stop = self.kernel.stop
        while not stop.is_set():
            for candle in self.screener.close_due():
                self._closed.put_nowait(candle)
            end = self.screener.window_end()
            due = time.monotonic() - self._last_publish >= self.settings.publish_interval_s
            if end and (end != self._last_window_end or due):
                self._last_window_end = end
                self._last_publish = time.monotonic()
                try:
                    await self._publish_movers()
                except TransientError as error:  # movers are recomputed next round
                    log.warning(
                        "movers not published: redis unavailable", extra={"error": str(error)}
                    )
            await sleep_unless(stop, TICK_S)

    async def _publish_candles(self) -> None:
        """Closed candles in closing order; one Redis cannot take waits at the head of the
        queue (a Redis outage costs time, not candles, and not the process)."""
        stop = self.kernel.stop
        while not (stop.is_set() and self._closed.empty()):
            try:
                candle = await asyncio.wait_for(self._closed.get(), timeout=TICK_S)
            except TimeoutError:
                continue
            backoff = Backoff(cap=10.0)
            while True:
                try:
                    await self._publish_candle(candle)
                    break
                except TransientError as error:
                    if stop.is_set():
                        log.error(
                            "stopping with candles unpublished: redis unavailable; the next"
                            " start backfills the lookback from REST",
                            extra={"unpublished": self._closed.qsize() + 1},
                        )
                        return
                    delay = backoff.next_delay()
                    log.warning(
                        "candle kept, redis unavailable",
                        extra={"queued": self._closed.qsize() + 1, "error": str(error)},
                    )
                    await sleep_unless(stop, delay)

    async def _publish_candle(self, candle: ClosedCandle) -> None:
        await self.kernel.bus.publish(
            Candle(
                event_id=deterministic_id("candle", candle.symbol, candle.open_time),
                symbol=candle.symbol,
                open_time=candle.open_time,
                open=candle.open,
                high=candle.high,
                low=candle.low,
                close=candle.close,
                volume=candle.volume,
                turnover=candle.turnover,
            )
        )

    async def _publish_movers(self) -> None:
        gainers, losers = self.screener.movers(self.settings.top_n)
        timestamp = self.screener.watermark_ms // 1000
        interval = f"{self.lookback_min}m"
        self.metrics.movers.clear()
        for direction, movers in (("gainer", gainers), ("loser", losers)):
            for stat in movers:
                self.metrics.movers.labels(symbol=stat.symbol, direction=direction).set(
                    stat.pct_change
                )
                await self.kernel.bus.publish(market_data_of(stat, timestamp, interval))
        self.published_movers = {
            "gainers": [_summary(s) for s in gainers],
            "losers": [_summary(s) for s in losers],
        }

    async def _backfill(self) -> None:
        """Fetch from REST every closed minute the sockets could not see whole."""
        stop = self.kernel.stop
        pending: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            for symbol in self.screener.symbols:
                if symbol in self._backfilling:
                    continue
                span = self.screener.backfill_range(symbol)
                if span is None:
                    continue
                self._backfilling.add(symbol)
                task = asyncio.create_task(self._backfill_symbol(symbol, *span))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await sleep_unless(stop, TICK_S)
        for task in list(pending):
            task.cancel()

    async def _backfill_symbol(self, symbol: str, first: int, last: int) -> None:
        try:
            async with self._backfill_slots:
                candles = await self.rest.klines(symbol, first, last)
            closed = self.screener.apply_backfill(symbol, candles, last)
            closed += self.screener.close_due([symbol])
            for candle in closed:
                if candle.source != "deals":
                    self.metrics.backfilled.inc()
                self._closed.put_nowait(candle)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning(
                "backfill failed, will retry",
                extra={"symbol": symbol, "error": f"{type(error).__name__}: {error}"[:300]},
            )
            await asyncio.sleep(1.0)
        finally:
            self._backfilling.discard(symbol)

    # ----- status -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "config": public_config(self.settings),
            "lookback_min": self.lookback_min,
            "universe": self.universe_size,
            "pod_index": self.settings.pod_index(),
            "chunks": [
                {
                    "index": c.index,
                    "symbols": len(c.symbols),
                    "connected": c.connected,
                    "sessions": c.sessions,
                    "errors": c.refused[-5:],
                }
                for c in self.connections
            ],
            "exchange_time_ms": self.screener.watermark_ms,
            "deals_seen": self.screener.deals_seen,
            "deals_ignored": self.screener.deals_ignored,
            "malformed_examples": self.malformed_examples,
            "frames_refused_for_time": self.screener.frames_refused,
            "time_jump_examples": self.time_jump_examples,
            "movers": self.published_movers,
        }

    async def close(self) -> None:
        await self.rest.close()


def _summary(stat: WindowStat) -> dict[str, float | str]:
    return {"symbol": stat.symbol, "pct_change": round(stat.pct_change, 4), "price": stat.price}
