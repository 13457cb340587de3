"""ml_advisor's settings: where the models live, which one to load, and the shadow gate."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator

from cdb.core.config import ServiceSettings
from cdb.ml_advisor.model_store import VERSION_PATTERN, list_versions

__all__ = ["MlAdvisorSettings"]


class MlAdvisorSettings(ServiceSettings):
    http_port: int = Field(default=8005, gt=0, lt=65536)
    ml_model_dir: Path = Path("/data/models")
    ml_model_version: str | None = Field(
        default=None, pattern=VERSION_PATTERN, description="unset: the latest version"
    )
    ml_model_reload_s: float = Field(
        default=60.0, gt=0, description="how often an unpinned advisor looks for a newer model"
    )
    shadow_enabled: bool = True
    shadow_confidence_threshold: float = Field(default=0.7, ge=0, le=1)
    ml_top_features: int = Field(default=5, ge=1, le=20)
    ml_outlier_span: float = Field(
        default=1.0, gt=0, description="outlier: beyond training min/max by this x the range"
    )
    ml_drift_window: int = Field(default=2000, ge=10)
    ml_drift_min_rows: int = Field(default=200, ge=1)
    ml_drift_interval_s: float = Field(default=30.0, gt=0)
    ml_persist_candles: bool = True
    ml_movers_max_age_s: int = Field(
        default=180, gt=0, description="a movers snapshot older than this ranks nobody"
    )
    stale_after_s: float = Field(default=180.0, gt=0)
    bot_rest_url: str | None = Field(
        default=None, description="warm new symbols from bot_rest's klines (unset: live only)"
    )

    @field_validator("ml_model_version")
    @classmethod
    def pinned_version_exists(cls, version: str | None, info: ValidationInfo) -> str | None:
        model_dir = info.data.get("ml_model_dir")
        if version is not None and isinstance(model_dir, Path):
            known = [m.version for m in list_versions(model_dir)]
            if version not in known:
                raise ValueError(
                    f"no such model version under ML_MODEL_DIR={model_dir} "
                    f"(available: {', '.join(known) or 'none'}; train one: cdb ml train)"
                )
        return version
