"""The operator's configuration, from its environment (the chart sets every variable).

Two groups: where the operator itself reaches Redis and PostgreSQL (to publish control
events and write ``config_audit``), and what it puts into the bot_ws pods it creates
(image, service hosts, the names of the Secrets holding the passwords — never the
passwords themselves).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from cdb.core.config import PostgresSettings, RedisSettings

__all__ = ["OperatorEnv"]

K8sName = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class OperatorEnv(RedisSettings, PostgresSettings):
    """Environment of ``python -m cdb_operator``."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    operator_namespace: str = Field(default="cdb", min_length=1, max_length=63, pattern=K8sName)
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8080, gt=0, lt=65536)
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")

    bot_ws_image: str = Field(default="cdb/bot_ws:latest", min_length=1)
    bot_ws_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    bot_ws_cpu_request: str = "100m"
    bot_ws_cpu_limit: str = "500m"
    bot_ws_memory_request: str = "128Mi"
    bot_ws_memory_limit: str = "256Mi"
    redis_secret_name: str = Field(default="redis", min_length=1, pattern=K8sName)
    postgres_secret_name: str = Field(default="postgres", min_length=1, pattern=K8sName)
    mexc_ws_url: str = Field(default="wss://contract.mexc.com/edge", min_length=1)
    mexc_rest_url: str = Field(default="https://contract.mexc.com", min_length=1)
    bot_rest_url: str = Field(default="http://bot-rest:8004", min_length=1)
    # how fast the screener lets the exchange clock run (MEXC: 1; mexc_sim: its --speed)
    bot_ws_frame_clock_max_rate: float = Field(default=1.5, gt=0, le=100_000)
    bot_ws_frame_max_ahead_s: float = Field(default=300.0, ge=0)

    universe_refresh_s: float = Field(default=300.0, gt=0)
    universe_timeout_s: float = Field(default=10.0, gt=0)
    bus_publish_timeout_s: float = Field(default=5.0, gt=0)
    retry_delay_s: float = Field(default=10.0, gt=0)
