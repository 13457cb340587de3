"""Events, their generated JSON Schemas, and the database migrations."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from cdb.core.config import ServiceSettings
from cdb.core.db import apply_migrations, migrations_dir
from cdb.core.events import EVENT_MODELS, Control, ControlSettings, MarketData, deterministic_id
from cdb.core.schemas import render_schemas, schema_drift
from tests.support import ROOT

SEED_MARKET_DATA = {
    "type": "market_data",
    "symbol": "BTC_USDT",
    "price": 43000.12,
    "volume": 150000.0,
    "pct_change": 4.5,
    "timestamp": 1736555700,
    "interval": "15m",
}


def test_committed_schemas_match_the_models() -> None:
    assert schema_drift(ROOT / "schemas") == [], "run: cdb schemas"


def test_drift_is_detected(tmp_path: Path) -> None:
    for name, text in render_schemas().items():
        (tmp_path / name).write_text(text)
    (tmp_path / "signal.json").write_text("{}")
    (tmp_path / "stray.json").write_text("{}")
    assert schema_drift(tmp_path) == ["signal.json", "stray.json"]
    result = subprocess.run(
        [sys.executable, "-m", "cdb.cli", "schemas", "--check", "--directory", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1 and "signal.json" in result.stderr


def test_the_seed_market_data_event_validates_against_model_and_schema() -> None:
    event = MarketData.model_validate(SEED_MARKET_DATA)
    assert event.schema_version == 1 and len(event.event_id) == 32
    schema = json.loads((ROOT / "schemas" / "market_data.json").read_text())
    jsonschema.validate(event.model_dump(mode="json"), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(SEED_MARKET_DATA | {"extra": 1}, schema)


@pytest.mark.parametrize(
    "change",
    [
        {"unexpected": 1},
        {"price": "43000"},
        {"price": -1.0},
        {"symbol": "btc-usdt"},
        {"timestamp": 1.5},
        {"schema_version": 2},
        {"pct_change": float("nan")},
    ],
)
def test_unknown_or_mistyped_fields_are_rejected(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        MarketData.model_validate_json(json.dumps(SEED_MARKET_DATA | change))


def test_every_event_has_an_id_and_a_version() -> None:
    for model in EVENT_MODELS.values():
        fields = model.model_fields
        assert "event_id" in fields and "schema_version" in fields


def test_deterministic_ids_depend_only_on_their_inputs() -> None:
    assert deterministic_id("ord", "sig-1") == deterministic_id("ord", "sig-1")
    assert deterministic_id("ord", "sig-1") != deterministic_id("ord", "sig-2")


def test_control_settings_reject_out_of_range_values() -> None:
    with pytest.raises(ValidationError):
        ControlSettings(max_position_pct=150.0)
    control = Control(
        bot="b",
        generation=1,
        config_hash="h",
        timestamp=1.0,
        settings=ControlSettings(signal_threshold_pct=2.5),
    )
    assert control.settings.paused is None


async def test_migrations_on_an_empty_database_and_applied_twice(
    settings: ServiceSettings, postgresql: Any
) -> None:
    first = await apply_migrations(settings)
    assert first[0] == "0001_initial"
    assert await apply_migrations(settings) == []
    postgresql.commit()
    with postgresql.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        tables = {row[0] for row in cur.fetchall()}
    expected = {
        "signals",
        "ml_signals",
        "orders",
        "fills",
        "positions",
        "risk_events",
        "equity",
        "config_audit",
    }
    assert expected <= tables


async def test_an_up_to_date_database_is_left_alone_without_loading_yoyo(
    settings: ServiceSettings, service_env: dict[str, str], tmp_path: Path
) -> None:
    """Every service applies migrations at start; once all are recorded as applied, the
    check is one query and yoyo (with sqlparse: ~4 MiB for the process's whole life) is
    never imported. A migration not yet applied still goes through yoyo."""
    assert (await apply_migrations(settings))[0] == "0001_initial"
    script = (
        "import asyncio, sys\n"
        "from cdb.core.config import ServiceSettings\n"
        "from cdb.core.db import apply_migrations\n"
        "print(asyncio.run(apply_migrations(ServiceSettings())), 'yoyo' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=service_env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[]", "False"]

    pending = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), pending)
    (pending / "0099_probe.sql").write_text("CREATE TABLE probe_pending (id int);\n")
    assert await apply_migrations(settings, pending) == ["0099_probe"]
    assert await apply_migrations(settings, pending) == []
