"""``schemas/*.json``: one JSON Schema per event and per bot_rest answer
(``bot_rest.*.json``), generated from the pydantic models."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from cdb.core.events import EVENT_MODELS
from cdb.core.rest import REST_MODELS

__all__ = ["render_schemas", "schema_drift", "write_schemas"]


def render_schemas() -> dict[str, str]:
    """File name → JSON text, deterministic (sorted keys, trailing newline)."""
    rendered = {}
    models: dict[str, type[BaseModel]] = {**EVENT_MODELS, **REST_MODELS}
    for name, model in models.items():
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://cdb.io/schemas/{name}.json"
        rendered[f"{name}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return rendered


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, text in render_schemas().items():
        path = directory / filename
        path.write_text(text)
        written.append(path)
    return written


def schema_drift(directory: Path) -> list[str]:
    """Names of schema files that differ from the models (missing, changed or extra)."""
    expected = render_schemas()
    drift = [
        name
        for name, text in expected.items()
        if not (directory / name).exists() or (directory / name).read_text() != text
    ]
    drift += [p.name for p in directory.glob("*.json") if p.name not in expected]
    return sorted(drift)
