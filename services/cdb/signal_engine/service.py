"""signal_engine: ``market_data`` in, ``signals`` out, exactly once in effect.

Per event: in one transaction (locked per symbol) the cooldown state is read, the rule
evaluated and the signal inserted; then the signal is published (its ``event_id`` is its
deterministic ``signal_id``) and the entry acknowledged. A redelivered event finds its own
signal and publishes the same one again, which downstream consumers skip by id.
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
from cdb.core.events import Control, MarketData, Stream
from cdb.core.service import Service, public_config
from cdb.signal_engine.settings import SignalEngineSettings
from cdb.signal_engine.store import (
    ask_window,
    insert_signal,
    lock_symbol,
    read_window,
)
from cdb.signal_engine.strategy import MomentumStrategy, StrategyParams, Suppressed

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
            self.consumer(Stream.MARKET_DATA, MarketData, self.on_market_data),
            self.consumer(Stream.CONTROL, Control, self.on_control, touches_health=False),
        ]

    async def on_market_data(self, md: MarketData) -> None:
        db = self.kernel.database
        # pipelined: the lock and the two reads go out together (one round trip), the
        # insert and the commit in a second one
        async with db.connection() as conn, conn.pipeline(), conn.transaction():
            await lock_symbol(conn, md.symbol)
            control = await ask_control(conn, self.name)  # a peer may have applied one
            # the strategy's name does not change with the live config
            window = await ask_window(conn, md, self.strategy.name)
            self.adopt(await read_control(control))
            strategy = self.strategy
            # A redelivered event republishes its stored signal as it was, whatever the
            # parameters in force now (a threshold changed or a pause since must not lose it).
            stored, cooldown = await read_window(window, md)
            if stored is None:
                outcome = strategy.evaluate(md, cooldown)
                if isinstance(outcome, Suppressed):
                    self.suppressed.labels(outcome.reason).inc()
                    return
                created = await insert_signal(conn, outcome)
            else:
                outcome, created = stored, False
        await self.kernel.bus.publish(outcome, Stream.SIGNALS)
        if created:
            self.generated.labels(outcome.side).inc()
            log.info(
                "signal",
                extra={
                    "signal_id": outcome.signal_id,
                    "symbol": outcome.symbol,
                    "side": outcome.side,
                    "confidence": outcome.confidence,
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
