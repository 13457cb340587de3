"""Everything the handlers share, built once at operator start-up (kopf's ``memo``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from cdb.core.bus import Bus
from cdb.core.db import Database
from cdb_operator.audit import AuditLog
from cdb_operator.kube import KubeClient
from cdb_operator.metrics import OperatorMetrics
from cdb_operator.settings import OperatorEnv
from cdb_operator.universe import UniverseClient

__all__ = ["OperatorContext"]


@dataclass
class OperatorContext:
    env: OperatorEnv
    kube: KubeClient
    bus: Bus
    db: Database
    audit: AuditLog
    universe: UniverseClient
    metrics: OperatorMetrics
    bots: dict[str, dict[str, Any]] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    ready: bool = False

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        """One reconcile at a time per bot (handlers, timer and workload watch share it)."""
        return self.locks.setdefault(f"{namespace}/{name}", asyncio.Lock())

    async def close(self) -> None:
        await self.kube.close()
        await self.bus.close()
        await self.db.close()
