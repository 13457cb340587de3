"""The table of TradingBots and the API server's verdict on each: shared by the offline
checks (tests/operator/test_crd.py, crd-check) and the real API server
(tests/operator/test_kube_crd.py), which must agree on every case.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CASES", "DESIGN_SPEC", "TWO", "bot"]


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
    "trading": {"mode": "paper", "paused": False, "approval": "auto", "approvalTimeoutSeconds": 60},
    "shadowMode": {"enabled": True, "confidenceThreshold": 0.7},
}

ONE_OF = "spec: Invalid value: set exactly one of spec.symbols (non-empty) or spec.universe"

# (case, spec, expected verdict, a fragment of the API server's message)
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
    (
        "manual approval",
        {"symbols": TWO, "trading": {"approval": "manual", "approvalTimeoutSeconds": 5}},
        "ok",
        "",
    ),
    ("no spec", None, "schema", "spec: Required value"),
    (
        "approval maybe",
        {"symbols": TWO, "trading": {"approval": "maybe"}},
        "schema",
        'spec.trading.approval: Unsupported value: "maybe"',
    ),
    (
        "approval timeout 4 s",
        {"symbols": TWO, "trading": {"approvalTimeoutSeconds": 4}},
        "schema",
        "spec.trading.approvalTimeoutSeconds in body should be greater than or equal to 5",
    ),
    (
        "approval timeout 3601 s",
        {"symbols": TWO, "trading": {"approvalTimeoutSeconds": 3601}},
        "schema",
        "spec.trading.approvalTimeoutSeconds in body should be less than or equal to 3600",
    ),
    (
        "chunk size 0",
        {"symbols": TWO, "chunkSize": 0},
        "schema",
        "spec.chunkSize in body should be greater than or equal to 1",
    ),
    (
        "chunk size 201",
        {"symbols": TWO, "chunkSize": 201},
        "schema",
        "spec.chunkSize in body should be less than or equal to 200",
    ),
    (
        "threshold 0",
        {"symbols": TWO, "signal": {"thresholdPct": 0}},
        "schema",
        "spec.signal.thresholdPct in body should be greater than 0",
    ),
    (
        "threshold negative",
        {"symbols": TWO, "signal": {"thresholdPct": -1}},
        "schema",
        "spec.signal.thresholdPct in body should be greater than 0",
    ),
    (
        "lookback 0",
        {"symbols": TWO, "signal": {"lookbackMinutes": 0}},
        "schema",
        "spec.signal.lookbackMinutes in body should be greater than or equal to 1",
    ),
    (
        "daily loss 101 %",
        {"symbols": TWO, "risk": {"maxDailyLossPct": 101}},
        "schema",
        "spec.risk.maxDailyLossPct in body should be less than or equal to 100",
    ),
    (
        "mode yolo",
        {"symbols": TWO, "trading": {"mode": "yolo"}},
        "schema",
        'spec.trading.mode: Unsupported value: "yolo"',
    ),
    (
        "lower-case symbol",
        {"symbols": ["btc_usdt"]},
        "schema",
        "spec.symbols[0] in body should match",
    ),
    (
        "unknown exchange",
        {"symbols": TWO, "exchange": "binance"},
        "schema",
        'spec.exchange: Unsupported value: "binance"',
    ),
    (
        "unknown universe",
        {"universe": "all-coins"},
        "schema",
        'spec.universe: Unsupported value: "all-coins"',
    ),
    (
        "confidence 1.5",
        {"symbols": TWO, "shadowMode": {"confidenceThreshold": 1.5}},
        "schema",
        "spec.shadowMode.confidenceThreshold in body should be less than or equal to 1",
    ),
    (
        "bad secret name",
        {"symbols": TWO, "trading": {"mode": "live", "credentialsSecretRef": {"name": "My_Key"}}},
        "schema",
        "spec.trading.credentialsSecretRef.name in body should match",
    ),
    (
        "chunk size as text",
        {"symbols": TWO, "chunkSize": "big"},
        "schema",
        "spec.chunkSize in body must be of type integer",
    ),
    (
        "live without credentials",
        {"symbols": TWO, "trading": {"mode": "live"}},
        "cel",
        "spec.trading: Required value: trading.mode live requires trading.credentialsSecretRef",
    ),
    ("neither symbols nor universe", {"chunkSize": 10}, "cel", ONE_OF),
    ("empty symbols, no universe", {"symbols": []}, "cel", ONE_OF),
    (
        "symbols and universe",
        {"symbols": TWO, "universe": "all-usdt-perpetuals"},
        "cel",
        ONE_OF,
    ),
    (
        "position above exposure",
        {"symbols": TWO, "risk": {"maxPositionPct": 20, "maxExposurePct": 15}},
        "cel",
        "spec.risk: Invalid value: risk.maxPositionPct must not exceed risk.maxExposurePct",
    ),
]
