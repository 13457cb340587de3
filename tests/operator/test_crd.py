"""The TradingBot CRD: its schema, its CEL rules and the examples, checked without a cluster.

* Every resource goes through kube-apiserver's own create path, run by ``crd-check``
  (scripts/setup.d/crd-check, k8s.io/apiextensions-apiserver v0.37.2): structural
  pruning and defaulting, then the custom-resource strategy's validation (OpenAPI schema,
  list sets, and the ``x-kubernetes-validations`` CEL rules with cel-go). The CRD itself
  goes through the CRD strategy's validation (structural schema, defaults, CEL compilation
  and cost), and through kubernetes-validate (strict).
* The operator's pydantic spec model must agree with the CRD on every case and default.
What only a real API server enforces is listed in docs/OPERATOR.md.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import celpy
import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from cdb_operator.spec import TradingBotSpec
from tests.support import ROOT
from tests.support.crd_cases import CASES, TWO, bot

CRD_PATH = ROOT / "charts" / "cdb" / "crds" / "tradingbots.yaml"
CRD_CHECK = ROOT / ".tools" / "bin" / "crd-check"
EXAMPLES = sorted((ROOT / "examples").glob("*/tradingbot.yaml"))


def load_crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return crd


CRD = load_crd()
VERSION = CRD["spec"]["versions"][0]
SCHEMA: dict[str, Any] = VERSION["schema"]["openAPIV3Schema"]


def tool(path: Path) -> str:
    assert path.exists(), f"{path} is missing: run `make setup` (scripts/setup.d installs it)"
    return str(path)


def crd_check(
    resources: list[dict[str, Any]], crd: Path = CRD_PATH
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The API server's verdicts from crd-check: the CRD's, then each resource's, in order."""
    result = subprocess.run(
        [tool(CRD_CHECK), "-crd", str(crd), "-"],
        input=json.dumps(resources),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    crd_verdict, *verdicts = (json.loads(line) for line in result.stdout.splitlines())
    assert len(verdicts) == len(resources), result.stdout
    return crd_verdict, verdicts


def verdict(checked: dict[str, Any]) -> tuple[str, list[str]]:
    """("ok", []) or ("schema"/"cel", messages) from one of crd-check's lines."""
    if checked["schema_errors"]:
        return "schema", checked["schema_errors"]
    if checked["cel_errors"]:
        return "cel", checked["cel_errors"]
    return "ok", []


def chart_default_bot() -> dict[str, Any]:
    values = yaml.safe_load((ROOT / "charts" / "cdb" / "values.yaml").read_text())
    return bot(values["tradingBot"]["spec"])


def key(resource: dict[str, Any]) -> str:
    return json.dumps(resource, sort_keys=True)


CHECKED = [
    *(bot(spec) for _, spec, _, _ in CASES),
    *(yaml.safe_load(path.read_text()) for path in EXAMPLES),
    chart_default_bot(),
]


@dataclass(frozen=True)
class ApiServer:
    """crd-check's verdicts: the CRD's, and each checked resource's."""

    crd: dict[str, Any]
    verdicts: dict[str, dict[str, Any]]

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        """What the API server makes of creating ``resource`` (one of CHECKED)."""
        return self.verdicts[key(resource)]


@pytest.fixture(scope="module")
def api_server() -> ApiServer:
    """One crd-check run over every resource the tests check."""
    crd_verdict, verdicts = crd_check(CHECKED)
    return ApiServer(crd_verdict, {key(r): v for r, v in zip(CHECKED, verdicts, strict=True)})


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 15
    assert {expected for _, _, expected, _ in CASES} == {"ok", "schema", "cel"}


@pytest.mark.parametrize(("case", "spec", "expected", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_the_crd_decides_each_resource(
    api_server: ApiServer, case: str, spec: dict[str, Any] | None, expected: str, fragment: str
) -> None:
    outcome, messages = verdict(api_server.create(bot(spec)))
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


def test_the_crd_defaults_are_the_operator_defaults(api_server: ApiServer) -> None:
    defaulted = api_server.create(bot({"symbols": TWO}))["defaulted"]["spec"]
    model = TradingBotSpec.model_validate({"symbols": TWO}).model_dump(
        by_alias=True, exclude_none=True
    )
    assert defaulted == model
    assert defaulted["chunkSize"] == 200 and defaulted["trading"] == {
        "mode": "paper",
        "paused": False,
        "approval": "auto",
        "approvalTimeoutSeconds": 60,
    }


def test_crd_check_runs_the_api_servers_create_path() -> None:
    """What only kube-apiserver's code does: crd-check is no pass-through."""
    resource = bot({"symbols": ["BTC_USDT", "BTC_USDT"], "noSuchField": 1, "chunkSize": 50})
    resource["metadata"]["name"] = "Not_A_Name"
    resource["status"] = {"chunks": 9}
    live = bot({"symbols": TWO, "trading": {"mode": "live"}, "risk": {"maxPositionPct": 50.5}})
    _, (checked, cel) = crd_check([resource, live])
    # structural pruning drops the unknown field; create drops status, sets generation 1
    assert checked["pruned"] == ["spec.noSuchField"]
    assert "noSuchField" not in checked["defaulted"]["spec"]
    assert "status" not in checked["defaulted"]
    assert checked["defaulted"]["metadata"] == {
        "name": "Not_A_Name",
        "namespace": "default",
        "generation": 1,
    }
    assert checked["defaulted"]["spec"]["chunkSize"] == 50
    # x-kubernetes-list-type: set and the metadata name rules
    errors = checked["schema_errors"]
    assert 'spec.symbols[1]: Duplicate value: "BTC_USDT"' in errors, errors
    assert any(e.startswith('metadata.name: Invalid value: "Not_A_Name"') for e in errors)
    # both CEL rules fail, on a defaulted object (maxExposurePct 50 came from the schema)
    assert cel["schema_errors"] == []
    assert sorted(cel["cel_errors"]) == [
        "spec.risk: Invalid value: risk.maxPositionPct must not exceed risk.maxExposurePct",
        "spec.trading: Required value: trading.mode live requires trading.credentialsSecretRef",
    ]


def test_crd_check_rejects_a_crd_the_api_server_rejects(tmp_path: Path) -> None:
    crd = load_crd()
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["chunkSize"]["default"] = 500
    (tmp_path / "bad-default.yaml").write_text(yaml.safe_dump(crd))
    # The API server compiles the rules only once every default is valid: no defaults here.
    del spec["properties"]["chunkSize"]["default"]
    del spec["properties"]["trading"]["default"], spec["properties"]["risk"]["default"]
    spec["x-kubernetes-validations"].append({"rule": "self.noSuchField > 0"})
    (tmp_path / "bad-rule.yaml").write_text(yaml.safe_dump(crd))

    errors = crd_check([], tmp_path / "bad-default.yaml")[0]["errors"]
    assert any(
        e.startswith("spec.validation.openAPIV3Schema.properties[spec].properties[chunkSize]")
        and "default: Invalid value: 500:  in body should be less than or equal to 200" in e
        for e in errors
    ), errors
    errors = crd_check([], tmp_path / "bad-rule.yaml")[0]["errors"]
    assert len(errors) == 1, errors
    assert "x-kubernetes-validations[1].rule" in errors[0], errors
    assert "compilation failed: ERROR: <input>:1:5: undefined field 'noSuchField'" in errors[0]


def test_the_api_server_accepts_the_crd(api_server: ApiServer) -> None:
    assert api_server.crd == {"crd": "tradingbots.cdb.io", "errors": []}


def test_the_crd_is_a_valid_apiextensions_object() -> None:
    kubernetes_validate.validate(CRD, "1.37", strict=True)


def test_every_cel_rule_compiles_with_cel_python_too() -> None:
    """A second CEL implementation: the rules stay portable CEL, not a cel-go dialect."""
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
def test_every_example_is_valid_and_documented(api_server: ApiServer, path: Path) -> None:
    resource = yaml.safe_load(path.read_text())
    assert verdict(api_server.create(resource)) == ("ok", [])
    TradingBotSpec.model_validate(resource["spec"])
    assert (path.parent / "README.md").read_text().startswith("# ")


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 4


def test_the_charts_default_trading_bot_is_valid(api_server: ApiServer) -> None:
    resource = chart_default_bot()
    assert verdict(api_server.create(resource)) == ("ok", [])
    TradingBotSpec.model_validate(resource["spec"])
