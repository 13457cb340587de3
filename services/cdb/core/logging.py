"""JSON-lines logging for every process, configured in one place (python-json-logger)."""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

__all__ = ["CdbJsonFormatter", "configure_logging"]

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
