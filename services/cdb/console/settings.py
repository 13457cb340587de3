"""console's configuration (environment variables of the same names, upper case).

The login password comes from a file (a mounted Secret, or the demo's data dir), never
from the environment or a log line; the session key from ``CONSOLE_SESSION_SECRET`` (a
Secret), else one generated at start (sessions then end with the process).
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from cdb.core.config import ServiceSettings

__all__ = ["ConsoleSettings"]

TRADINGBOT = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)/([a-z0-9]([-.a-z0-9]*[a-z0-9])?)$")
SERVICE_URL = re.compile(r"^[a-z_]+=https?://[^\s,]+$")


class ConsoleSettings(ServiceSettings):
    http_port: int = Field(default=8007, gt=0, lt=65536)
    # the console reads what others migrated; it never changes the schema
    migrate_on_start: bool = False
    console_password_file: str = Field(
        default="", description="file holding the owner's password; unset: nobody logs in"
    )
    console_session_secret: SecretStr = Field(
        default=SecretStr(""), description="key signing session cookies; unset: one per start"
    )
    console_session_max_age_s: int = Field(default=12 * 3600, ge=60, le=30 * 24 * 3600)
    console_secure_cookies: bool = Field(
        default=False, description="mark cookies Secure (set when served over https)"
    )
    console_login_per_minute: int = Field(default=5, ge=1, le=100)
    console_login_backoff_max_s: float = Field(
        default=900.0, ge=1, allow_inf_nan=False, description="longest block after failures"
    )
    console_tradingbot: str = Field(
        default="",
        description="namespace/name of the TradingBot to patch (Kubernetes mode); "
        "unset: changes go out as control events (the demo)",
    )
    console_kube_api: str = Field(
        default="https://kubernetes.default.svc",
        description="the API server (in a pod: its service account's token and CA)",
    )
    console_kube_account_dir: str = Field(
        default="/var/run/secrets/kubernetes.io/serviceaccount",
        description="where the pod's service account token and CA are mounted",
    )
    console_services: str = Field(
        default="",
        description="name=url pairs, comma-separated: whose /health and /status to show",
    )
    console_notifier_url: str = Field(default="", description="notifier for WebPush subscribe")
    console_refresh_s: float = Field(default=2.0, gt=0, le=60, allow_inf_nan=False)

    @field_validator("console_tradingbot")
    @classmethod
    def _tradingbot(cls, value: str) -> str:
        if value and not TRADINGBOT.match(value):
            raise ValueError("expected namespace/name, e.g. cdb/mexc-momentum, or empty")
        return value

    @field_validator("console_services")
    @classmethod
    def _services(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            if not SERVICE_URL.match(item):
                raise ValueError(f"expected name=http://host:port, got {item!r}")
        return value

    def service_urls(self) -> dict[str, str]:
        pairs = (part.strip().partition("=") for part in self.console_services.split(","))
        return {name: url.rstrip("/") for name, _, url in pairs if name}

    def tradingbot(self) -> tuple[str, str] | None:
        if not self.console_tradingbot:
            return None
        namespace, _, name = self.console_tradingbot.partition("/")
        return namespace, name

    def password(self) -> str:
        """The owner's password, read at each login (a rotated Secret applies at once);
        empty when no file is configured or readable."""
        if not self.console_password_file:
            return ""
        try:
            return Path(self.console_password_file).read_text().strip()
        except OSError:
            return ""
