"""Gating: sanity checks suppress with a reason, the confidence gate, live control."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from cdb.core.control import merge_control
from cdb.core.events import Control, ControlSettings
from cdb.ml_advisor.features import FEATURES
from cdb.ml_advisor.gating import FeatureChecks, Suppression, gate
from cdb.ml_advisor.model_store import FeatureStats
from cdb.ml_advisor.service import CheckedCandle, ShadowGate

NAMES = list(FEATURES)


def _stats(low: float, high: float) -> FeatureStats:
    return FeatureStats(
        minimum=low,
        maximum=high,
        q001=low,
        q999=high,
        median=(low + high) / 2,
        bin_edges=[(low + high) / 2],
        bin_fractions=[0.5, 0.5],
    )


STATS = {name: _stats(-1.0, 1.0) for name in NAMES} | {"range_pos_60m": _stats(0.0, 1.0)}


def _row(**values: float) -> np.ndarray:  # type: ignore[type-arg]
    row = np.full(len(NAMES), 0.5)
    for name, value in values.items():
        row[NAMES.index(name)] = value
    return row


def test_a_sane_row_passes() -> None:
    assert FeatureChecks(NAMES, STATS, outlier_span=1.0).first_problem(_row()) is None


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (_row(ret_5m=math.nan), (Suppression.NAN_FEATURE, "ret_5m")),
        (_row(volume_z_15m=math.inf), (Suppression.NAN_FEATURE, "volume_z_15m")),
        (_row(range_pos_60m=1.5), (Suppression.OUT_OF_RANGE, "range_pos_60m")),
        (_row(volatility_15m=-0.1), (Suppression.OUT_OF_RANGE, "volatility_15m")),
        (_row(mover_rank=2.0), (Suppression.OUT_OF_RANGE, "mover_rank")),
        (_row(ret_1m=3.01), (Suppression.OUTLIER, "ret_1m")),  # range 2, span 1: beyond 3
        (_row(ret_1m=-3.5), (Suppression.OUTLIER, "ret_1m")),
    ],
)
def test_sanity_checks_name_reason_and_feature(
    row: np.ndarray,
    expected: tuple[Suppression, str],  # type: ignore[type-arg]
) -> None:
    assert FeatureChecks(NAMES, STATS, outlier_span=1.0).first_problem(row) == expected


def test_inside_the_outlier_band_is_not_an_outlier() -> None:
    assert FeatureChecks(NAMES, STATS, outlier_span=1.0).first_problem(_row(ret_1m=2.99)) is None


def test_the_gate() -> None:
    assert gate(0.69, threshold=0.7, enabled=True) is Suppression.BELOW_THRESHOLD
    assert gate(0.7, threshold=0.7, enabled=True) is Suppression.BELOW_THRESHOLD
    assert gate(0.7001, threshold=0.7, enabled=True) is None
    assert gate(0.99, threshold=0.7, enabled=False) is Suppression.DISABLED


def _control(generation: int, **changes: object) -> Control:
    return Control(
        bot="mexc-momentum",
        generation=generation,
        config_hash=f"h{generation}",
        settings=ControlSettings(**changes),
        timestamp=1.0,  # type: ignore[arg-type]
    )


def test_control_changes_the_gate_live_and_an_older_generation_does_not_undo_it() -> None:
    shadow = ShadowGate(enabled=True, threshold=0.7)

    def apply(control: Control) -> bool:  # the kernel's merge, as control_state does it
        return shadow.adopt(merge_control(shadow.control, control))

    assert apply(_control(3, shadow_confidence_threshold=0.9))
    assert (shadow.enabled, shadow.threshold) == (True, 0.9)
    assert apply(_control(4, shadow_enabled=False))
    assert (shadow.enabled, shadow.threshold) == (False, 0.9)  # None = unchanged
    assert not apply(_control(2, shadow_enabled=True, shadow_confidence_threshold=0.1))
    assert (shadow.enabled, shadow.threshold, shadow.generation) == (False, 0.9, 4)
    assert apply(_control(4, signal_threshold_pct=2.0))  # same generation, re-applied
    assert (shadow.enabled, shadow.threshold) == (False, 0.9)


@pytest.mark.parametrize(
    ("prices", "message"),
    [
        ({"open": 1.0, "high": 0.9, "low": 1.1, "close": 1.0}, "high 0.9 < low 1.1"),
        ({"open": 2.0, "high": 1.5, "low": 1.0, "close": 1.2}, "within"),
        ({"open": 1.0, "high": 1.5, "low": 1.0, "close": 0.5}, "within"),
    ],
)
def test_inconsistent_candles_are_refused(prices: dict[str, float], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CheckedCandle(symbol="A_USDT", open_time=60, volume=1.0, turnover=1.0, **prices)
