"""signal_engine: ``market_data`` in, ``signals`` out, exactly once in effect.

Per event: in one transaction (locked per symbol) the cooldown state is read, the rule
evaluated and the signal inserted; then the signal is published (its ``event_id`` is its
deterministic ``signal_id``) and the entry acknowledged. A redelivered event finds its own
signal and publishes the same one again, which downstream consumers skip by id.

The events of one read go through one transaction together (``on_market_data_batch``, the
consumer's batch handler; one event is a batch of one), in order, each deciding as if the
ones before it had committed: a signal made earlier in the batch is the symbol's cooldown
and a window's own signal for the events after it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from prometheus_client import Counter

from cdb.core.bus import Consumer
from cdb.core.control import (
    AppliedControl,
    ask_control,
    load_control,
    read_control,
)
from cdb.core.events import Control, MarketData, Signal, Stream
from cdb.core.service import Service, public_config
from cdb.signal_engine.settings import SignalEngineSettings
from cdb.signal_engine.store import (
    ask_insert_signal,
    ask_window,
    lock_symbol,
    read_inserted,
    read_window,
)
from cdb.signal_engine.strategy import (
    LastSignal,
    MomentumStrategy,
    StrategyParams,
    Suppressed,
    SuppressReason,
    signal_id_for,
)

log = logging.getLogger("cdb.signal_engine")


def params_from(settings: SignalEngineSettings) -> StrategyParams:
    return StrategyParams(
        threshold_pct=settings.signal_threshold_pct,
        min_volume=settings.signal_min_volume,
        lookback_min=settings.lookback_min,
        allow_short=settings.signal_allow_short,
        cooldown_s=settings.signal_cooldown_s,
    )


class SignalEngine(Service[SignalEngineSettings]):
    name = "signal_engine"

    def __init__(self, settings: SignalEngineSettings, kernel: Any) -> None:
        super().__init__(settings, kernel)
        self.strategy = MomentumStrategy(params_from(settings))
        registry = kernel.metrics.registry
        self.generated = Counter(
            "signals_generated_total", "Signals generated", ["side"], registry=registry
        )
        self.suppressed = Counter(
            "signal_engine_signals_suppressed_total",
            "market_data events that made no signal",
            ["reason"],
            registry=registry,
        )

    async def start(self) -> None:
        self.adopt(await load_control(self.kernel.database, self.name))
        if self.control is not None:
            log.info("live config restored", extra={"control": self.control.describe()})

    def consumers(self) -> Sequence[Consumer[Any]]:
        return [
            self.consumer(
                Stream.MARKET_DATA,
                MarketData,
                self.on_market_data,
                batch_handler=self.on_market_data_batch,
            ),
            self.consumer(Stream.CONTROL, Control, self.on_control, touches_health=False),
        ]

    async def on_market_data(self, md: MarketData) -> None:
        """One event: a batch of one (the road of a quiet stream, and of each event of a
        batch that failed)."""
        await self.on_market_data_batch([md])

    async def on_market_data_batch(self, events: Sequence[MarketData]) -> None:
        """The events of one read in one transaction: the locks of their symbols (sorted),
        the live config and every window's reads in one round trip; then each event in
        order, as :meth:`on_market_data` would after the ones before it committed (their
        signals are the cooldown and the windows' own signals of the ones after); the
        inserts and the commit; the signals published in order, in one round trip."""
        db = self.kernel.database
        outcomes: list[Signal] = []
        inserts: list[tuple[Signal, Any]] = []
        suppressed: list[SuppressReason] = []
        async with db.connection() as conn, conn.pipeline(), conn.transaction():
            for symbol in sorted({md.symbol for md in events}):
                await lock_symbol(conn, symbol)
            control = await ask_control(conn, self.name)
            windows = [await ask_window(conn, md, self.strategy.name) for md in events]
            self.adopt(await read_control(control))
            strategy = self.strategy
            made: dict[str, Signal] = {}  # this batch's signals by id
            newest: dict[str, LastSignal] = {}  # this batch's newest signal per symbol
            for md, window in zip(events, windows, strict=True):
                stored, cooldown = await read_window(window, md)
                if stored is None:
                    own = (signal_id_for(md, side, strategy.name) for side in ("long", "short"))
                    stored = next((made[i] for i in own if i in made), None)
                if stored is not None:  # redelivered: republished as it was
                    outcomes.append(stored)
                    continue
                mine, last = newest.get(md.symbol), cooldown.last.get(md.symbol)
                if mine is not None and (last is None or mine.timestamp >= last.timestamp):
                    cooldown.last[md.symbol] = mine
                outcome = strategy.evaluate(md, cooldown)
                if isinstance(outcome, Suppressed):
                    suppressed.append(outcome.reason)
                    continue
                inserts.append((outcome, await ask_insert_signal(conn, outcome)))
                made[outcome.signal_id] = outcome
                if mine is None or outcome.timestamp >= mine.timestamp:
                    newest[md.symbol] = LastSignal(outcome.signal_id, outcome.timestamp)
                outcomes.append(outcome)
            created = [signal for signal, cursor in inserts if await read_inserted(cursor)]
        for reason in suppressed:
            self.suppressed.labels(reason).inc()
        await self.kernel.bus.publish_payloads(
            [(Stream.SIGNALS, signal.model_dump_json().encode()) for signal in outcomes]
        )
        for signal in created:
            self._made(signal)

    def _made(self, signal: Signal) -> None:
        self.generated.labels(signal.side).inc()
        log.info(
            "signal",
            extra={
                "signal_id": signal.signal_id,
                "symbol": signal.symbol,
                "side": signal.side,
                "confidence": signal.confidence,
            },
        )

    def adopted(self, control: AppliedControl) -> None:
        """Strategy parameters from the live config."""
        self.strategy = MomentumStrategy(params_from(self.settings).with_control(control.settings))

    def status(self) -> dict[str, Any]:
        params = self.strategy.params
        return {
            "config": public_config(self.settings),
            "in_force": {**asdict(params), "effective_cooldown_s": params.effective_cooldown_s},
            "control": self.control.describe() if self.control else None,
        }
