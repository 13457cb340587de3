"""Prometheus metrics every service exports, in a registry owned by the service object.

Label sets stay small, as the seed advises: ``stream`` and ``kind`` only. Every label set
a consumer can touch exists from its start at 0 (:meth:`ServiceMetrics.watch_stream`):
a counter born at 1 hides its first increment from ``increase()`` and ``rate()``.
The process's CPU, memory, file descriptors and garbage collections are exported too.
"""

from __future__ import annotations

import time

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["Health", "ServiceMetrics"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Health:
    """Whether the service's input is flowing: ``ok`` or ``stale`` past the stale limit."""

    def __init__(self, stale_after_s: float, *, watches_input: bool = True) -> None:
        self.stale_after_s = stale_after_s
        self.watches_input = watches_input
        self.started_at = time.time()
        self.last_event_at: float | None = None

    def touch(self, at: float | None = None) -> None:
        self.last_event_at = time.time() if at is None else at

    def age_s(self) -> float:
        reference = self.last_event_at if self.last_event_at is not None else self.started_at
        return max(0.0, time.time() - reference)

    def state(self) -> str:
        if self.watches_input and self.age_s() > self.stale_after_s:
            return "stale"
        return "ok"


class ServiceMetrics:
    """The kernel's metrics for one service, plus a registry for the service's own."""

    def __init__(self, service: str, health: Health) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # process_cpu_seconds_total, process_resident_memory_bytes, python_gc_*, python_info:
        # the library's collectors of this process, also registered in this registry.
        for collector in (PROCESS_COLLECTOR, GC_COLLECTOR, PLATFORM_COLLECTOR):
            r.register(collector)
        self.events_consumed = Counter(
            "cdb_events_consumed_total", "Events handled successfully", ["stream"], registry=r
        )
        self.events_published = Counter(
            "cdb_events_published_total", "Events published", ["stream"], registry=r
        )
        self.handler_seconds = Histogram(
            "cdb_handler_duration_seconds",
            "Time a handler took for one event",
            ["stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.handler_errors = Counter(
            "cdb_handler_errors_total",
            "Handler failures (kind: transient, error)",
            ["stream", "kind"],
            registry=r,
        )
        self.dead_letters = Counter(
            "cdb_dead_letters_total",
            "Entries sent to the dead-letter stream",
            ["stream"],
            registry=r,
        )
        self.duplicates = Counter(
            "cdb_duplicates_skipped_total",
            "Entries skipped because their event_id was already handled",
            ["stream"],
            registry=r,
        )
        self.claimed = Counter(
            "cdb_entries_claimed_total",
            "Pending entries claimed from a consumer that stopped acknowledging",
            ["stream"],
            registry=r,
        )
        self.bus_errors = Counter(
            "cdb_bus_connection_errors_total", "Redis connection failures", registry=r
        )
        self.last_event_age = Gauge(
            "cdb_last_event_age_seconds", "Seconds since the last input event", registry=r
        )
        self.last_event_age.set_function(health.age_s)
        self.status = Gauge(
            f"{service}_status", f"1 while {service} is running and healthy, else 0", registry=r
        )
        self.status.set_function(lambda: 1.0 if health.state() == "ok" else 0.0)

    def watch_stream(self, stream: str) -> None:
        """Create every series of a consumed stream at 0, before its first event."""
        for counter in (self.events_consumed, self.dead_letters, self.duplicates, self.claimed):
            counter.labels(stream)
        for kind in ("transient", "error"):
            self.handler_errors.labels(stream, kind)

    def render(self) -> bytes:
        return generate_latest(self.registry)
