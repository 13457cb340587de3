"""The TradingBot's Ready / Progressing / Degraded conditions.

* Ready: the config is applied (owned objects written, live settings published) and every
  screener chunk is ready.
* Progressing: the screener StatefulSet is rolling out (new pods, rescale).
* Degraded: something the operator needs is failing — the reason says what
  (UniverseUnavailable, BusUnreachable, AuditUnavailable, ApiError, InvalidSpec).

Beside them, the two conditions of kstatus (sigs.k8s.io/cli-utils), which Flux, Argo CD
and ``kpt live status`` read for any custom resource: ``Reconciling`` mirrors Progressing
and ``Stalled`` mirrors Degraded, with the same reason and message. Together with
``status.observedGeneration`` they say InProgress, Failed or Current.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "KSTATUS",
    "Problem",
    "WorkloadState",
    "merge_conditions",
    "same_conditions",
    "workload_conditions",
]


# kstatus condition ← the condition it mirrors
KSTATUS = {"Reconciling": "Progressing", "Stalled": "Degraded"}


class Problem(BaseModel):
    """Why the bot is degraded: a CamelCase reason and a human message (no secrets)."""

    model_config = ConfigDict(frozen=True)

    reason: str
    message: str


class WorkloadState(BaseModel):
    """The parts of a StatefulSet's status the conditions depend on."""

    model_config = ConfigDict(frozen=True)

    replicas: int
    ready: int = 0
    updated: int = 0
    current_revision: str | None = None
    update_revision: str | None = None

    @classmethod
    def of(cls, stateful_set: Mapping[str, Any] | None, desired: int) -> WorkloadState:
        status = (stateful_set or {}).get("status") or {}
        return cls(
            replicas=desired,
            ready=int(status.get("readyReplicas") or 0),
            updated=int(status.get("updatedReplicas") or 0),
            current_revision=status.get("currentRevision"),
            update_revision=status.get("updateRevision"),
        )

    @property
    def rolled_out(self) -> bool:
        same_revision = self.current_revision == self.update_revision
        return self.ready >= self.replicas and self.updated >= self.replicas and same_revision


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def workload_conditions(
    workload: WorkloadState | None, applied: bool, problem: Problem | None
) -> list[dict[str, str]]:
    """Ready, Progressing, Degraded (type/status/reason/message, no timestamps)."""
    if workload is None:
        ready = ("False", "NotApplied", "the bot's objects are not written yet")
        progressing = ("True", "Reconciling", "writing the bot's objects")
    elif workload.rolled_out:
        chunks = f"{workload.ready}/{workload.replicas} screener chunks ready"
        ready = ("True", "Running", chunks) if applied else ("False", "ConfigNotApplied", chunks)
        progressing = ("False", "RolloutComplete", chunks)
    else:
        chunks = f"{workload.ready}/{workload.replicas} screener chunks ready"
        ready = ("False", "ChunksStarting", chunks)
        progressing = ("True", "RollingOut", f"{workload.updated} updated, {chunks}")
    degraded = ("True", problem.reason, problem.message) if problem else ("False", "AsExpected", "")
    return [
        {"type": kind, "status": s, "reason": r, "message": m}
        for kind, (s, r, m) in (
            ("Ready", ready),
            ("Progressing", progressing),
            ("Degraded", degraded),
        )
    ]


def merge_conditions(
    current: Sequence[Mapping[str, Any]] | None,
    wanted: Sequence[Mapping[str, str]],
    generation: int | None,
) -> list[dict[str, Any]]:
    """``wanted`` plus its kstatus mirrors, with ``lastTransitionTime`` kept unless the
    status flipped."""
    previous = {str(c.get("type")): c for c in current or [] if isinstance(c, Mapping)}
    by_type = {c["type"]: c for c in wanted if c["type"] not in KSTATUS}
    mirrors = [
        {**by_type[source], "type": kind} for kind, source in KSTATUS.items() if source in by_type
    ]
    merged: list[dict[str, Any]] = []
    for condition in [*by_type.values(), *mirrors]:
        before = previous.get(condition["type"])
        flipped = before is None or before.get("status") != condition["status"]
        entry: dict[str, Any] = dict(condition)
        kept = before.get("lastTransitionTime") if before is not None else None
        entry["lastTransitionTime"] = kept if kept and not flipped else _now()
        if generation is not None:
            entry["observedGeneration"] = generation
        merged.append(entry)
    return merged


def same_conditions(a: Sequence[Mapping[str, Any]] | None, b: Sequence[Mapping[str, Any]]) -> bool:
    """Equal apart from timestamps: no status write needed."""

    def essence(items: Sequence[Mapping[str, Any]] | None) -> list[tuple[Any, ...]]:
        return sorted(
            (
                str(c.get("type")),
                str(c.get("status")),
                str(c.get("reason")),
                str(c.get("message")),
                str(c.get("observedGeneration")),
            )
            for c in items or []
        )

    return essence(a) == essence(b)
