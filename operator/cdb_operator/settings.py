"""The operator's configuration, from its environment (the chart sets every variable).

Three groups: where the operator itself reaches Redis and PostgreSQL (to publish control
events and write ``config_audit``); the screener pod the chart defines
(``SCREENER_POD_TEMPLATE``: image, security, probes, resources, volumes all come from
it); and what it puts into that pod's env per bot (service hosts, the names of the
Secrets holding the passwords — never the passwords themselves).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Self

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from cdb.core.config import PostgresSettings, RedisSettings
from cdb_operator.pod_template import load_pod_template

__all__ = ["OperatorEnv"]

K8sName = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
# where the chart mounts its ConfigMap cdb-screener-pod
DEFAULT_POD_TEMPLATE = Path("/etc/cdb/screener-pod/pod.yaml")


class OperatorEnv(RedisSettings, PostgresSettings):
    """Environment of ``python -m cdb_operator``."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    operator_namespace: str = Field(default="cdb", min_length=1, max_length=63, pattern=K8sName)
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8080, gt=0, lt=65536)
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")

    screener_pod_template: Path = Field(default=DEFAULT_POD_TEMPLATE, validate_default=True)
    redis_secret_name: str = Field(default="redis", min_length=1, pattern=K8sName)
    postgres_secret_name: str = Field(default="postgres", min_length=1, pattern=K8sName)
    mexc_ws_url: str = Field(default="wss://contract.mexc.com/edge", min_length=1)
    mexc_rest_url: str = Field(default="https://contract.mexc.com", min_length=1)
    bot_rest_url: str = Field(default="http://bot-rest:8004", min_length=1)
    # how fast the screener lets the exchange clock run (MEXC: 1; mexc_sim: its --speed),
    # how far ahead of ours, and how far one frame may jump (a lagging mexc_sim catches up
    # in bursts of its faster time)
    bot_ws_frame_clock_max_rate: float = Field(default=1.5, gt=0, le=100_000)
    bot_ws_frame_max_ahead_s: float = Field(default=300.0, ge=0)
    bot_ws_frame_max_jump_s: float = Field(default=10.0, ge=0)

    universe_refresh_s: float = Field(default=300.0, gt=0)
    universe_timeout_s: float = Field(default=10.0, gt=0)
    bus_publish_timeout_s: float = Field(default=5.0, gt=0)
    retry_delay_s: float = Field(default=10.0, gt=0)

    _screener_pod: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("screener_pod_template")
    @classmethod
    def _a_pod_template(cls, path: Path) -> Path:
        load_pod_template(path)
        return path

    @model_validator(mode="after")
    def _load_pod_template(self) -> Self:
        self._screener_pod = load_pod_template(self.screener_pod_template)
        return self

    @property
    def screener_pod(self) -> dict[str, Any]:
        """A fresh copy of the chart's screener pod template (the caller may change it)."""
        return copy.deepcopy(self._screener_pod)

    @property
    def screener_image(self) -> str:
        image: str = self._screener_pod["spec"]["containers"][0].get("image", "")
        return image
