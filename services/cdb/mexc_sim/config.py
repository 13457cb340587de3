"""What the simulator is told: the market (``SimConfig``) and the faults it injects (``Faults``).

The same models back the CLI flags, the Python API and ``POST /sim/faults``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["Faults", "RestLimits", "SimConfig", "parse_args"]

Scenario = Literal["walk", "pump"]


class Faults(BaseModel):
    """Faults on demand; every field can be changed while the simulator runs."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    paused: bool = Field(default=False, description="stop every data push (acks/pongs go on)")
    drop_every_s: float | None = Field(
        default=None, gt=0, description="close every socket each N real seconds"
    )
    malformed_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of push frames sent malformed"
    )
    malformed_next: int = Field(default=0, ge=0, description="corrupt the next N push frames")
    push_delay_ms: int = Field(default=0, ge=0, description="delay before each push batch")
    rest_delay_ms: int = Field(default=0, ge=0, description="delay before each REST reply")
    ping_timeout_s: float = Field(
        default=60.0, gt=0, description="close a socket that sent no ping for this long (MEXC: 60)"
    )
    max_subs_per_connection: int | None = Field(
        default=None, gt=0, description="refuse subscriptions beyond this (MEXC documents none)"
    )
    rest_throttle_all: bool = Field(
        default=False, description="answer every REST call with MEXC's 510 throttle error"
    )
    future_frames_next: int = Field(
        default=0, ge=0, description="send the next N deal frames stamped ``future_ms`` ahead"
    )
    future_ms: int = Field(
        default=3 * 24 * 3600 * 1000, ge=0, description="how far ahead a future frame is stamped"
    )
    api_closed: list[str] = Field(
        default_factory=list,
        description="contracts whose detail says apiAllowed=false (closed to API trading)",
    )


class RestLimits(BaseModel):
    """Requests allowed per window and client, per endpoint family (MEXC's current docs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_s: float = Field(default=2.0, gt=0)
    detail: int = Field(default=10, gt=0)
    ticker: int = Field(default=10, gt=0)
    kline: int = Field(default=20, gt=0)
    deals: int = Field(default=20, gt=0)
    ping: int = Field(default=20, gt=0)


class SimConfig(BaseModel):
    """The simulated market. Same config and seed → the same market, deal for deal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8010, ge=0, lt=65536)
    symbols: int = Field(default=40, ge=1, le=5000)
    seed: int = 1
    speed: float = Field(default=1.0, gt=0, le=10_000, description="sim seconds per real second")
    scenario: Scenario = "walk"
    start_time: int | None = Field(
        default=None, ge=0, description="sim clock at start, unix seconds (default: now)"
    )
    history_min: int = Field(default=60, ge=0, le=10_000, description="bars before the start")
    keep_bars: int = Field(default=2000, ge=10, description="Min1 bars kept per symbol")
    deals_per_s: float = Field(default=1.0, gt=0, description="mean deals per symbol per sim s")
    deal_notional_usdt: float = Field(default=2500.0, gt=0)
    volatility: float = Field(default=0.0006, ge=0, description="log-return stdev per deal")
    pump_every_min: int = Field(default=3, ge=1, description="a new pump episode every N minutes")
    pump_pct: float = Field(default=8.0, gt=0, description="rise of a pump, then the same dump")
    pump_min: int = Field(default=2, ge=1, description="minutes the pump (and the dump) lasts")
    push_interval_s: float = Field(default=0.1, gt=0, description="real seconds between pushes")
    tickers_interval_s: float = Field(default=2.0, gt=0, description="push.tickers cadence")
    limits: RestLimits = RestLimits()
    faults: Faults = Faults()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cdb.mexc_sim",
        description="Offline MEXC contract exchange: WebSocket /edge and REST /api/v1/contract.",
    )
    add = parser.add_argument
    add("--host", default=os.environ.get("HTTP_HOST", "127.0.0.1"))
    add("--port", type=int, default=int(os.environ.get("HTTP_PORT", "8010")))
    add("--symbols", type=int, default=40, help="number of USDT perpetuals (default 40)")
    add("--seed", type=int, default=1, help="same seed, same market")
    add("--speed", type=float, default=1.0, help="time acceleration (60: a minute per second)")
    add("--scenario", choices=["walk", "pump"], default="walk", help="pump: pump/dump episodes")
    add("--start-time", type=int, default=None, help="sim clock at start, unix s (default now)")
    add("--history-min", type=int, default=60, help="Min1 bars generated before the start")
    add("--deals-per-s", type=float, default=1.0, help="mean deals per symbol per sim second")
    add("--pump-every-min", type=int, default=3)
    add("--pump-pct", type=float, default=8.0)
    add("--push-interval", type=float, default=0.1, help="real seconds between push batches")
    add("--drop-every", type=float, default=None, help="fault: close all sockets every N s")
    add("--pause", action="store_true", help="fault: start with pushes stopped")
    add("--malformed-rate", type=float, default=0.0, help="fault: share of malformed frames")
    add("--push-delay-ms", type=int, default=0, help="fault: delay each push batch")
    add("--rest-delay-ms", type=int, default=0, help="fault: delay each REST reply")
    add("--ping-timeout", type=float, default=60.0, help="close sockets silent this long")
    add("--max-subs", type=int, default=None, help="fault: per-connection subscription cap")
    add("--throttle", action="store_true", help="fault: every REST call gets code 510")
    add(
        "--api-closed",
        nargs="*",
        default=[],
        metavar="SYMBOL",
        help="fault: these contracts say apiAllowed=false",
    )
    add("--kline-limit", type=int, default=20, help="kline requests per 2 s and client")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> SimConfig:
    """CLI flags → :class:`SimConfig`; a bad value exits 2 with one line naming the flag."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return SimConfig(
            host=args.host,
            port=args.port,
            symbols=args.symbols,
            seed=args.seed,
            speed=args.speed,
            scenario=args.scenario,
            start_time=args.start_time,
            history_min=args.history_min,
            deals_per_s=args.deals_per_s,
            pump_every_min=args.pump_every_min,
            pump_pct=args.pump_pct,
            push_interval_s=args.push_interval,
            limits=RestLimits(kline=args.kline_limit),
            faults=Faults(
                paused=args.pause,
                drop_every_s=args.drop_every,
                malformed_rate=args.malformed_rate,
                push_delay_ms=args.push_delay_ms,
                rest_delay_ms=args.rest_delay_ms,
                ping_timeout_s=args.ping_timeout,
                max_subs_per_connection=args.max_subs,
                rest_throttle_all=args.throttle,
                api_closed=args.api_closed,
            ),
        )
    except ValidationError as error:
        for item in error.errors():
            flag = "--" + "-".join(str(p) for p in item["loc"]).replace("_", "-")
            parser.error(f"{flag}={item.get('input')!r}: {item['msg']}")
        raise
