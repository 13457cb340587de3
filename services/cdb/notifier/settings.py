"""notifier's configuration (environment variables of the same names, upper case).

Channel URLs and tokens are secrets: they come only from the environment a Kubernetes
Secret (or the demo's data dir) fills, and never appear in a log line or in ``/status``.
"""

from __future__ import annotations

import re
from datetime import time as clock
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from cdb.core.config import ServiceSettings

__all__ = ["NotifierSettings", "QuietHours", "parse_quiet_hours"]

QUIET_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")

QuietHours = tuple[clock, clock]


def parse_quiet_hours(value: str) -> QuietHours | None:
    """``"22:00-07:00"`` (UTC) -> (22:00, 07:00); ``""`` -> None (no quiet hours)."""
    if not value:
        return None
    match = QUIET_HOURS.match(value)
    if match is None:
        raise ValueError("expected HH:MM-HH:MM (UTC), e.g. 22:00-07:00, or empty")
    h1, m1, h2, m2 = (int(part) for part in match.groups())
    if (h1, m1) == (h2, m2):
        raise ValueError("start and end are the same time")
    return clock(h1, m1), clock(h2, m2)


class NotifierSettings(ServiceSettings):
    http_port: int = Field(default=8006, gt=0, lt=65536)
    # The notifier watches no single input: quiet hours of the market are not its failure.
    notify_urls: SecretStr = Field(
        default=SecretStr(""),
        description="apprise URLs (tgram://, discord://, slack://, ntfy://, mailto://, "
        "json://, ...), separated by whitespace or commas; from a Secret only",
    )
    notify_fills: Literal["all", "closes", "none"] = "closes"
    notify_skip_alerts: str = Field(
        default="CdbCircuitBreakerTripped",
        description="Alertmanager alert names not told (comma-separated): the breaker is "
        "told from the bus, with its reason and exactly once",
    )
    notify_quiet_hours: str = Field(default="", description="HH:MM-HH:MM UTC; '' for none")
    notify_max_attempts: int = Field(default=8, gt=0, le=100)
    notify_retry_base_s: float = Field(default=2.0, gt=0, allow_inf_nan=False)
    notify_retry_cap_s: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    notify_group_wait_s: float = Field(
        default=5.0, ge=0, allow_inf_nan=False, description="how long a new one waits for kin"
    )
    notify_group_min: int = Field(
        default=3, ge=2, description="this many of one group due together go as one message"
    )
    notify_rate_per_min: float = Field(default=20.0, gt=0, allow_inf_nan=False)
    notify_send_timeout_s: float = Field(default=15.0, gt=0, allow_inf_nan=False)
    notify_poll_s: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    notify_daily_summary_hour: int = Field(
        default=20, ge=-1, le=23, description="UTC hour of the daily summary; -1 for none"
    )
    notify_starting_equity: float = Field(default=10_000.0, gt=0, allow_inf_nan=False)
    # WebPush (RFC 8030/8291/8292): VAPID keys from a Secret, or generated once in the dir.
    vapid_private_key: SecretStr = Field(default=SecretStr(""), description="PEM or base64url")
    vapid_key_dir: str = Field(default="", description="where a generated key is kept")
    vapid_subject: str = Field(default="mailto:owner@localhost", pattern=r"^(mailto:|https://)")
    webpush_ttl_s: int = Field(default=3600, ge=0)

    @field_validator("notify_quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str) -> str:
        parse_quiet_hours(value)
        return value

    def quiet_hours(self) -> QuietHours | None:
        return parse_quiet_hours(self.notify_quiet_hours)

    def skipped_alerts(self) -> set[str]:
        return {name.strip() for name in self.notify_skip_alerts.split(",") if name.strip()}

    def apprise_urls(self) -> list[str]:
        raw = self.notify_urls.get_secret_value()
        return [url for url in re.split(r"[\s,]+", raw) if url]
