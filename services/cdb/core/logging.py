"""JSON-lines logging for every process, configured in one place (python-json-logger)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

__all__ = ["CdbJsonFormatter", "ThrottledWarning", "configure_logging"]

# What kopf's object loggers attach to each record: the operator's settings (asyncio queues
# inside: not data), a flag for its Event poster, and the object's reference, which becomes
# the "k8s" field.
KOPF_ATTRS = ("settings", "k8s_skip", "k8s_ref")


class CdbJsonFormatter(JsonFormatter):
    """One JSON object per record; a kopf object record carries its object as ``k8s``."""

    def __init__(self, service: str) -> None:
        super().__init__(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
            static_fields={"service": service},
            reserved_attrs=[*RESERVED_ATTRS, *KOPF_ATTRS],
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict):
            log_data["k8s"] = {key: value for key, value in ref.items() if value is not None}


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every record to stderr as one JSON object with the service name on it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(CdbJsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class ThrottledWarning:
    """A warning that can come in floods (every frame of a broken feed): one line per
    ``every_s`` at most, the next line saying how many were left out (``suppressed``).
    Count each occurrence in a metric as well: the log is for people, not for counting."""

    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.message = message
        self.every_s = every_s
        self.clock = clock
        self.suppressed = 0
        self._next = float("-inf")

    def __call__(self, **extra: Any) -> None:
        now = self.clock()
        if now < self._next:
            self.suppressed += 1
            return
        if self.suppressed:
            extra["suppressed"] = self.suppressed
        self.logger.warning(self.message, extra=extra)
        self.suppressed = 0
        self._next = now + self.every_s
