"""What a service is to the runner: a class with its consumers, tasks and status.

A service package reads top to bottom: its settings (a :class:`ServiceSettings`
subclass), its handlers, its state, and a ``__main__`` that calls :func:`cdb.core.runner.main`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from cdb.core.bus import DONE_TTL_S, Bus, Consumer
from cdb.core.config import ServiceSettings
from cdb.core.control import AppliedControl, apply_control
from cdb.core.db import Database
from cdb.core.events import Control, Event, Stream
from cdb.core.metrics import Health, ServiceMetrics

if TYPE_CHECKING:  # FastAPI loads only in a service that has routes
    from cdb.core.http import APIRouter

__all__ = ["Kernel", "Service"]

log = logging.getLogger("cdb.service")

S = TypeVar("S", bound=ServiceSettings)
E = TypeVar("E", bound=Event)


@dataclass
class Kernel:
    """The shared machinery the runner hands to a service."""

    name: str
    bus: Bus
    db: Database | None
    metrics: ServiceMetrics
    health: Health
    stop: asyncio.Event

    @property
    def database(self) -> Database:
        if self.db is None:
            raise RuntimeError(f"{self.name} declared uses_database = False")
        return self.db


class Service(Generic[S]):
    """Base class: override what the service needs, nothing else."""

    name: ClassVar[str]
    uses_database: ClassVar[bool] = True
    watches_input: ClassVar[bool] = True

    def __init__(self, settings: S, kernel: Kernel) -> None:
        self.settings = settings
        self.kernel = kernel
        self.control: AppliedControl | None = None  # the live config in force, if any

    # -- the live config (``cdb:control``, stored in ``control_state``) ---------------
    async def on_control(self, control: Control) -> None:
        """A ``Control`` event: stored (newer generations only), then adopted."""
        applied = await apply_control(self.kernel.database, self.name, control)
        if applied is None:
            log.info("stale control event ignored", extra={"generation": control.generation})
            return
        self.adopt(applied)
        log.info("live config applied", extra={"control": applied.describe()})

    def adopt(self, control: AppliedControl | None) -> None:
        """Take ``control`` in when it supersedes the one in force (a stored live config
        read at start or in a handler's transaction, a peer's newer one): :meth:`adopted`."""
        if control is None or not control.supersedes(self.control):
            return
        self.control = control
        self.adopted(control)

    def adopted(self, control: AppliedControl) -> None:
        """Hook: what the service takes from a new live config (parameters, limits,
        pause); the settings stay in force where none was applied."""

    def consumer(
        self,
        stream: Stream,
        model: type[E],
        handler: Callable[[E], Awaitable[None]],
        *,
        start: str = "0",
        touches_health: bool = True,
        done_ttl_s: int = DONE_TTL_S,
        done_keys: bool = True,
        batch_handler: Callable[[Sequence[E]], Awaitable[None]] | None = None,
    ) -> Consumer[E]:
        """A consumer in this service's group, with the bus limits from settings.
        ``done_keys=False`` only where ``handler`` is idempotent on its own PostgreSQL key;
        ``batch_handler`` takes the events of one read together, all or nothing (see
        :class:`cdb.core.bus.Consumer`)."""
        return Consumer(
            stream=stream,
            model=model,
            handler=handler,
            group=self.name,
            start=start,
            max_attempts=self.settings.bus_max_attempts,
            claim_idle_ms=self.settings.bus_claim_idle_ms,
            block_ms=self.settings.bus_block_ms,
            batch=self.settings.bus_batch,
            touches_health=touches_health,
            done_ttl_s=done_ttl_s,
            done_keys=done_keys,
            batch_handler=batch_handler,
        )

    def consumers(self) -> Sequence[Consumer[Any]]:
        return []

    def tasks(self) -> Sequence[Callable[[], Coroutine[Any, Any, None]]]:
        """Background loops; each must return soon after ``kernel.stop`` is set."""
        return []

    def router(self) -> APIRouter | None:
        return None

    def status(self) -> dict[str, Any]:
        """Extra ``/status`` fields: at least the config in force."""
        return {"config": public_config(self.settings)}

    async def start(self) -> None:
        """Runs once the bus and database are up, before any consumer (rebuild state here)."""

    async def close(self) -> None:
        """Runs after consumers and tasks stopped."""


def public_config(settings: ServiceSettings) -> dict[str, Any]:
    """The settings without secrets (passwords and keys never leave the process)."""
    hidden = ("password", "secret", "key", "token")
    return {
        name: value
        for name, value in settings.model_dump(mode="json").items()
        if not any(word in name for word in hidden)
    }
