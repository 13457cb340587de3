"""The operator's Prometheus metrics (docs/METRICS.md, operator section)."""

from __future__ import annotations

from prometheus_client import Counter

from cdb.core.metrics import Health, ServiceMetrics

__all__ = ["OperatorMetrics"]


class OperatorMetrics:
    """Kernel metrics (bus publishes and errors, ``cdb_operator_status``) plus the operator's."""

    def __init__(self) -> None:
        self.kernel = ServiceMetrics("cdb_operator", Health(60.0, watches_input=False))
        registry = self.kernel.registry
        self.reconciles = Counter(
            "cdb_operator_reconciles_total",
            "TradingBot reconciliations (outcome: applied, unchanged, retry, invalid, standby)",
            ["outcome"],
            registry=registry,
        )
        self.control_events = Counter(
            "cdb_operator_control_events_total",
            "control events published to cdb:control",
            registry=registry,
        )
        self.audit_rows = Counter(
            "cdb_operator_audit_rows_total",
            "config_audit rows written (one per changed field)",
            registry=registry,
        )

        self.status_conflicts = Counter(
            "cdb_operator_status_conflicts_total",
            "readiness writes refused with 409 (a newer status landed first) and computed again",
            registry=registry,
        )

    def render(self) -> bytes:
        return self.kernel.render()
