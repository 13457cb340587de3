"""What the owner can do: answer a held order, and change the bot.

A decision is an :class:`ApprovalDecision` on ``cdb:approval_decisions`` with a fresh
event id per click; risk_manager decides (the first decision per order wins) and the page
shows the outcome once the ``approvals`` row changes. A bot change is, in Kubernetes, a
merge patch of the TradingBot (validated and audited by the API server, reconciled by the
operator); in the demo, which has no operator, a ``control`` event through the same bus
path the operator uses, one generation above what the services have applied.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from cdb.console.books import Books
from cdb.console.kube import BotClient
from cdb.core.bus import Bus
from cdb.core.control import AppliedControl, merge_control
from cdb.core.events import ApprovalDecision, Control, ControlSettings

__all__ = ["ACTOR", "BotChange", "BotControl", "decide"]

ACTOR = "console:owner"
DEMO_BOT = "demo"


async def decide(
    bus: Bus, order_id: str, decision: Literal["approve", "veto"], reason: str
) -> ApprovalDecision:
    event = ApprovalDecision(
        order_id=order_id,
        decision=decision,
        actor=ACTOR,
        reason=reason.strip()[:500],
        timestamp=time.time(),
    )
    await bus.publish(event)
    return event


@dataclass(frozen=True)
class BotChange:
    """The fields the console may change; None leaves one as it is."""

    paused: bool | None = None
    signal_threshold_pct: float | None = None
    signal_min_volume: float | None = None
    approval: Literal["auto", "manual"] | None = None

    def control_settings(self) -> ControlSettings:
        """Raises ValueError (pydantic's message) for a value the services would refuse."""
        return ControlSettings(
            paused=self.paused,
            signal_threshold_pct=self.signal_threshold_pct,
            signal_min_volume=self.signal_min_volume,
            approval=self.approval,
        )

    def spec_patch(self) -> dict[str, Any]:
        spec: dict[str, dict[str, Any]] = {}
        if self.paused is not None:
            spec.setdefault("trading", {})["paused"] = self.paused
        if self.approval is not None:
            spec.setdefault("trading", {})["approval"] = self.approval
        if self.signal_threshold_pct is not None:
            spec.setdefault("signal", {})["thresholdPct"] = self.signal_threshold_pct
        if self.signal_min_volume is not None:
            spec.setdefault("signal", {})["minVolume"] = self.signal_min_volume
        return spec


class BotControl:
    """Changes the bot the Kubernetes way when a TradingBot is configured, else the demo's."""

    def __init__(self, bus: Bus, books: Books, kube: BotClient | None) -> None:
        self.bus = bus
        self.books = books
        self.kube = kube

    @property
    def mode(self) -> str:
        return "kubernetes" if self.kube is not None else "control-event"

    async def spec(self) -> dict[str, Any] | None:
        """The TradingBot's spec (Kubernetes mode) or None."""
        if self.kube is None:
            return None
        bot = await self.kube.get()
        spec: dict[str, Any] = bot.get("spec") or {}
        return spec

    async def apply(self, change: BotChange) -> str:
        """Apply ``change``; returns a line for the page. Raises ValueError for a value
        out of range, :class:`cdb.console.kube.KubeError` when the API server refuses."""
        try:
            settings = change.control_settings()
        except ValidationError as error:
            raise ValueError(_first_error(error)) from None
        if self.kube is not None:
            await self.kube.patch_spec(change.spec_patch(), ACTOR)
            return "TradingBot patched; the operator applies it"
        state = await self.books.control_state()
        newest = max(state, key=lambda row: row["generation"], default=None)
        current = None
        if newest is not None:
            current = AppliedControl(
                newest["bot"],
                newest["bot_uid"],
                int(newest["generation"]),
                newest["config_hash"],
                ControlSettings.model_validate(newest["settings"]),
            )
        control = Control(
            bot=current.bot if current else DEMO_BOT,
            bot_uid=current.bot_uid if current else "",
            generation=current.generation + 1 if current else 1,
            config_hash="console",  # its digest below, once merged
            settings=settings,
            timestamp=time.time(),
        )
        # what the services will hold once they merged it, as they merge it
        merged = merge_control(current, control)
        if merged is None:  # one generation above the newest: never stale
            raise RuntimeError("the control merged as stale one generation above the newest")
        body = merged.settings.model_dump(mode="json", exclude_none=True)
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
        await self.bus.publish(control.model_copy(update={"config_hash": f"console-{digest}"}))
        return f"control event published (generation {control.generation})"


def _first_error(error: ValidationError) -> str:
    item = error.errors()[0]
    field = ".".join(str(part) for part in item["loc"])
    return f"{field}: {item['msg']}"
