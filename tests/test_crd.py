"""The TradingBot CRD: its schema, its CEL rules and the examples, checked without a cluster.

* The CRD object itself is validated against Kubernetes' apiextensions/v1 schema
  (kubernetes-validate, strict).
* Each resource in the table gets the API server's structural defaults, is validated
  against ``openAPIV3Schema`` with jsonschema's Draft 4 validator (OpenAPI 3.0 keeps
  Draft 4's boolean ``exclusiveMinimum``), then every ``x-kubernetes-validations`` rule on
  its path is evaluated with cel-python, with values typed as the API server types them
  (``number`` → double, ``integer`` → int).
* The operator's pydantic spec model must agree with the CRD on every case and default.
What only a real API server enforces is listed in docs/OPERATOR.md.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from cdb_operator.spec import TradingBotSpec

ROOT = Path(__file__).resolve().parent.parent
CRD_PATH = ROOT / "charts" / "cdb" / "crds" / "tradingbots.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*/tradingbot.yaml"))


def load_crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return crd


CRD = load_crd()
VERSION = CRD["spec"]["versions"][0]
SCHEMA: dict[str, Any] = VERSION["schema"]["openAPIV3Schema"]


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it: absent fields with a default."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        if isinstance(value, list) and "items" in schema:
            return [apply_defaults(schema["items"], item) for item in value]
        return value
    result = dict(value)
    for name, child in (schema.get("properties") or {}).items():
        if name not in result and "default" in child:
            result[name] = copy.deepcopy(child["default"])
        if name in result:
            result[name] = apply_defaults(child, result[name])
    return result


def to_cel(schema: dict[str, Any], value: Any) -> Any:
    """A JSON value as the typed CEL value the API server binds to ``self``."""
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties") or {}
        return celpy.celtypes.MapType(
            {
                celpy.celtypes.StringType(k): to_cel(properties.get(k, {}), v)
                for k, v in value.items()
            }
        )
    if kind == "array":
        return celpy.celtypes.ListType([to_cel(schema.get("items", {}), v) for v in value])
    if kind == "number":
        return celpy.celtypes.DoubleType(float(value))
    if kind == "integer":
        return celpy.celtypes.IntType(int(value))
    if kind == "boolean":
        return celpy.celtypes.BoolType(value)
    return celpy.celtypes.StringType(value)


def cel_failures(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Messages of the CEL rules that fail on ``value`` and everything below it."""
    failures: list[str] = []
    env = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations") or []:
        program = env.program(env.compile(rule["rule"]))
        try:
            result = program.evaluate({"self": to_cel(schema, value)})
            passed = isinstance(result, celpy.celtypes.BoolType) and bool(result)
        except celpy.CELEvalError as error:  # the API server rejects on a runtime error too
            passed, rule = False, {**rule, "message": f"{rule['message']} ({error})"}
        if not passed:
            failures.append(f"{path or '<root>'}: {rule['message']}")
    if isinstance(value, dict):
        for name, child in (schema.get("properties") or {}).items():
            if name in value:
                failures += cel_failures(child, value[name], f"{path}.{name}".lstrip("."))
    return failures


def verdict(resource: dict[str, Any]) -> tuple[str, list[str]]:
    """("ok", []) or ("schema"/"cel", messages), as the API server would decide."""
    defaulted = apply_defaults(SCHEMA, resource)
    validator = jsonschema.Draft4Validator(SCHEMA)
    errors = sorted(validator.iter_errors(defaulted), key=lambda e: list(e.absolute_path))
    if errors:
        return "schema", [
            f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in errors
        ]
    failures = cel_failures(SCHEMA, defaulted)
    return ("cel", failures) if failures else ("ok", [])


def bot(spec: dict[str, Any] | None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "apiVersion": "cdb.io/v1alpha1",
        "kind": "TradingBot",
        "metadata": {"name": "t"},
    }
    if spec is not None:
        resource["spec"] = spec
    return resource


TWO = ["BTC_USDT", "ETH_USDT"]
DESIGN_SPEC = {
    "exchange": "mexc",
    "symbols": TWO,
    "chunkSize": 200,
    "signal": {"thresholdPct": 3.0, "minVolume": 100000, "lookbackMinutes": 15},
    "risk": {"maxDailyLossPct": 5, "maxPositionPct": 10, "maxExposurePct": 50, "stopLossPct": 2},
    "trading": {"mode": "paper", "paused": False},
    "shadowMode": {"enabled": True, "confidenceThreshold": 0.7},
}

# (case, spec, expected verdict, a fragment of the expected message)
CASES: list[tuple[str, dict[str, Any] | None, str, str]] = [
    ("design example", DESIGN_SPEC, "ok", ""),
    ("symbols only, all defaults", {"symbols": TWO}, "ok", ""),
    ("universe only", {"universe": "all-usdt-perpetuals"}, "ok", ""),
    ("universe with empty symbols", {"universe": "all-usdt-perpetuals", "symbols": []}, "ok", ""),
    ("chunk size 1", {"symbols": TWO, "chunkSize": 1}, "ok", ""),
    ("position equal to exposure", {"symbols": TWO, "risk": {"maxPositionPct": 50}}, "ok", ""),
    ("shadow threshold 0", {"symbols": TWO, "shadowMode": {"confidenceThreshold": 0}}, "ok", ""),
    (
        "live with credentials",
        {"symbols": TWO, "trading": {"mode": "live", "credentialsSecretRef": {"name": "mexc"}}},
        "ok",
        "",
    ),
    ("no spec", None, "schema", "'spec' is a required property"),
    ("chunk size 0", {"symbols": TWO, "chunkSize": 0}, "schema", "less than the minimum of 1"),
    ("chunk size 201", {"symbols": TWO, "chunkSize": 201}, "schema", "greater than the maximum"),
    ("threshold 0", {"symbols": TWO, "signal": {"thresholdPct": 0}}, "schema", "minimum"),
    ("threshold negative", {"symbols": TWO, "signal": {"thresholdPct": -1}}, "schema", "minimum"),
    ("lookback 0", {"symbols": TWO, "signal": {"lookbackMinutes": 0}}, "schema", "minimum"),
    ("daily loss 101 %", {"symbols": TWO, "risk": {"maxDailyLossPct": 101}}, "schema", "maximum"),
    ("mode yolo", {"symbols": TWO, "trading": {"mode": "yolo"}}, "schema", "is not one of"),
    ("lower-case symbol", {"symbols": ["btc_usdt"]}, "schema", "does not match"),
    ("unknown exchange", {"symbols": TWO, "exchange": "binance"}, "schema", "is not one of"),
    ("unknown universe", {"universe": "all-coins"}, "schema", "is not one of"),
    (
        "confidence 1.5",
        {"symbols": TWO, "shadowMode": {"confidenceThreshold": 1.5}},
        "schema",
        "maximum",
    ),
    (
        "bad secret name",
        {"symbols": TWO, "trading": {"mode": "live", "credentialsSecretRef": {"name": "My_Key"}}},
        "schema",
        "does not match",
    ),
    ("chunk size as text", {"symbols": TWO, "chunkSize": "big"}, "schema", "is not of type"),
    (
        "live without credentials",
        {"symbols": TWO, "trading": {"mode": "live"}},
        "cel",
        "trading.mode live requires trading.credentialsSecretRef",
    ),
    ("neither symbols nor universe", {"chunkSize": 10}, "cel", "exactly one of spec.symbols"),
    ("empty symbols, no universe", {"symbols": []}, "cel", "exactly one of spec.symbols"),
    (
        "symbols and universe",
        {"symbols": TWO, "universe": "all-usdt-perpetuals"},
        "cel",
        "exactly one of spec.symbols",
    ),
    (
        "position above exposure",
        {"symbols": TWO, "risk": {"maxPositionPct": 20, "maxExposurePct": 15}},
        "cel",
        "maxPositionPct must not exceed risk.maxExposurePct",
    ),
]


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 15
    assert {expected for _, _, expected, _ in CASES} == {"ok", "schema", "cel"}


@pytest.mark.parametrize(("case", "spec", "expected", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_the_crd_decides_each_resource(
    case: str, spec: dict[str, Any] | None, expected: str, fragment: str
) -> None:
    outcome, messages = verdict(bot(spec))
    assert outcome == expected, messages
    if fragment:
        assert any(fragment in message for message in messages), messages


# A resource with no spec at all never reaches the operator's model: left out here.
WITH_SPEC = [c for c in CASES if c[1] is not None]


@pytest.mark.parametrize(
    ("case", "spec", "expected", "fragment"), WITH_SPEC, ids=[c[0] for c in WITH_SPEC]
)
def test_the_operator_spec_model_agrees_with_the_crd(
    case: str, spec: dict[str, Any], expected: str, fragment: str
) -> None:
    try:
        TradingBotSpec.model_validate(spec)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == (expected == "ok"), case


def test_the_crd_defaults_are_the_operator_defaults() -> None:
    defaulted = apply_defaults(SCHEMA, bot({"symbols": TWO}))["spec"]
    model = TradingBotSpec.model_validate({"symbols": TWO}).model_dump(
        by_alias=True, exclude_none=True
    )
    assert defaulted == model
    assert defaulted["chunkSize"] == 200 and defaulted["trading"] == {
        "mode": "paper",
        "paused": False,
    }


def test_the_crd_is_a_valid_apiextensions_object() -> None:
    kubernetes_validate.validate(CRD, "1.37", strict=True)


def test_every_cel_rule_compiles() -> None:
    rules: list[str] = []

    def collect(schema: dict[str, Any]) -> None:
        rules.extend(r["rule"] for r in schema.get("x-kubernetes-validations") or [])
        for child in (schema.get("properties") or {}).values():
            collect(child)

    collect(SCHEMA)
    env = celpy.Environment()
    assert len(rules) == 3
    for rule in rules:
        env.compile(rule)


def test_names_columns_and_status_subresource() -> None:
    names = CRD["spec"]["names"]
    assert CRD["metadata"]["name"] == "tradingbots.cdb.io"
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "TradingBot",
        "tradingbots",
        ["tb"],
    )
    assert VERSION["name"] == "v1alpha1" and VERSION["subresources"] == {"status": {}}
    columns = [c["name"] for c in VERSION["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Mode", "Symbols", "Chunks", "Ready", "Age"]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_every_example_is_valid_and_documented(path: Path) -> None:
    resource = yaml.safe_load(path.read_text())
    assert verdict(resource) == ("ok", [])
    TradingBotSpec.model_validate(resource["spec"])
    assert (path.parent / "README.md").read_text().startswith("# ")


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 4


def test_the_charts_default_trading_bot_is_valid() -> None:
    values = yaml.safe_load((ROOT / "charts" / "cdb" / "values.yaml").read_text())
    spec = values["tradingBot"]["spec"]
    assert verdict(bot(spec)) == ("ok", [])
    TradingBotSpec.model_validate(spec)
