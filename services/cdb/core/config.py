"""Settings shared by every service, and the one place a bad value stops a process.

Each service subclasses :class:`ServiceSettings` with its own fields; every field is read
from the environment variable of the same name in upper case (``SIGNAL_THRESHOLD_PCT``).
"""

from __future__ import annotations

import socket
import sys
from typing import Any, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "ConfigError",
    "PostgresSettings",
    "RedisSettings",
    "ServiceSettings",
    "describe_validation_error",
    "load_settings",
]


class RedisSettings(BaseSettings):
    """Where the event bus lives. Redis always requires a password; each service logs in as
    its own ACL user (``REDIS_USERNAME``, see :mod:`cdb.core.acl`)."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    redis_host: str = "127.0.0.1"
    redis_port: int = Field(default=6379, gt=0, lt=65536)
    redis_username: str = Field(default="default", min_length=1, max_length=64)
    redis_password: SecretStr = Field(min_length=1)
    redis_db: int = Field(default=0, ge=0)

    def redis_url(self) -> str:
        return f"redis://{self.redis_host}:{self.redis_port}/{self.redis_db}"


class PostgresSettings(BaseSettings):
    """Where the books live: database ``claire_de_binare``, user ``cdb_user``."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    postgres_host: str = "127.0.0.1"
    postgres_port: int = Field(default=5432, gt=0, lt=65536)
    postgres_db: str = "claire_de_binare"
    postgres_user: str = "cdb_user"
    postgres_password: SecretStr = SecretStr("")

    def postgres_conninfo(self) -> str:
        """A libpq conninfo string; the password is passed separately, never logged."""
        return (
            f"host={self.postgres_host} port={self.postgres_port} "
            f"dbname={self.postgres_db} user={self.postgres_user}"
        )


class ServiceSettings(RedisSettings, PostgresSettings):
    """What every service reads: the bus, the database, its HTTP port and its limits."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8000, gt=0, lt=65536)
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    consumer_name: str = Field(default_factory=socket.gethostname, min_length=1)
    stale_after_s: float = Field(default=120.0, gt=0)
    bus_max_len: int = Field(default=100_000, gt=0)
    bus_claim_idle_ms: int = Field(default=30_000, gt=0)
    bus_max_attempts: int = Field(default=5, gt=0)
    bus_block_ms: int = Field(default=1_000, gt=0)
    bus_batch: int = Field(default=64, gt=0)
    # how long a publish retries a dead or full Redis before the caller hears of it
    bus_publish_timeout_s: float = Field(default=30.0, gt=0)
    shutdown_grace_s: float = Field(default=20.0, gt=0)
    migrate_on_start: bool = True
    # the credential every state-changing HTTP endpoint requires (Authorization: Bearer);
    # from a Secret. Unset: those endpoints refuse every request.
    admin_token: SecretStr = SecretStr("")


class ConfigError(Exception):
    """Raised with one human line per invalid variable."""


S = TypeVar("S", bound=BaseSettings)


def describe_validation_error(error: ValidationError, given: dict[str, Any] | None = None) -> str:
    """One line per problem: the variable, the value given and the rule it broke."""
    lines = []
    for item in error.errors():
        name = ".".join(str(part) for part in item["loc"]).upper() or "CONFIG"
        value = item.get("input")
        if isinstance(value, dict):  # a missing field reports the whole input mapping
            value = (given or {}).get(name.lower(), "<unset>")
        if "password" in name.lower() or "secret" in name.lower() or "key" in name.lower():
            value = "<hidden>" if value not in (None, "", "<unset>") else value
        lines.append(f"config error: {name}={value!r}: {item['msg']}")
    return "\n".join(lines)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment; raise :class:`ConfigError` with a clear message."""
    try:
        return cls(**overrides)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, overrides)) from None


def load_settings_or_exit(cls: type[S]) -> S:
    """For ``main()``: print the config error on stderr and exit 2, no traceback."""
    try:
        return load_settings(cls)
    except ConfigError as error:
        print(str(error), file=sys.stderr)
        raise SystemExit(2) from None
