"""Training: deterministic for a seed, walk-forward without leakage, versioned artifacts,
TreeSHAP contributions that add up to the model's margin, PSI drift."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cdb.core.config import ConfigError, load_settings
from cdb.ml_advisor.candle_history import history_hash
from cdb.ml_advisor.drift import population_stability_index
from cdb.ml_advisor.features import FEATURES
from cdb.ml_advisor.inference import Predictor
from cdb.ml_advisor.model_store import (
    LoadedModel,
    ModelStoreError,
    list_versions,
    load_model,
    save_artifact,
)
from cdb.ml_advisor.settings import MlAdvisorSettings
from cdb.ml_advisor.synthetic import generate_history
from cdb.ml_advisor.training import (
    TrainingConfig,
    TrainingResult,
    auc_score,
    feature_stats,
    train_model,
    walk_forward_splits,
)

SMALL = TrainingConfig(seed=3, num_boost_round=40, folds=2)


@pytest.fixture(scope="module")
def history():  # type: ignore[no-untyped-def]
    return generate_history(symbols=4, minutes=1440, seed=11)


@pytest.fixture(scope="module")
def trained(history) -> TrainingResult:  # type: ignore[no-untyped-def]
    return train_model(history, SMALL, version="v1")


def test_training_is_deterministic_for_a_seed(history, trained: TrainingResult) -> None:  # type: ignore[no-untyped-def]
    again = train_model(history, SMALL, version="v1")
    assert again.booster.save_raw("json") == trained.booster.save_raw("json")
    assert again.manifest.metrics == trained.manifest.metrics
    assert again.manifest.training_data_hash == trained.manifest.training_data_hash
    other_seed = train_model(history, TrainingConfig(seed=4, num_boost_round=40, folds=2))
    assert other_seed.booster.save_raw("json") != trained.booster.save_raw("json")


def test_walk_forward_folds_never_train_on_what_they_validate() -> None:
    times = np.repeat(np.arange(0, 600 * 60, 60, dtype=np.int64), 3)
    embargo = 15 * 60
    splits = walk_forward_splits(times, folds=4, embargo_s=embargo)
    assert len(splits) == 4
    previous_end = -1
    for train, validation in splits:
        assert train.any() and validation.any()
        assert times[train].max() < times[validation].min() - embargo
        assert times[validation].min() > previous_end  # blocks move forward in time
        previous_end = int(times[validation].max())


def test_walk_forward_metrics_are_recorded_per_fold(trained: TrainingResult) -> None:
    metrics = trained.manifest.metrics
    assert [f.fold for f in metrics.folds] == [1, 2]
    for fold in metrics.folds:
        assert fold.train_end < fold.validation_start - 15 * 60
        assert fold.auc is not None and 0.0 <= fold.auc <= 1.0
    assert metrics.mean_auc is not None


def test_the_artifact_holds_model_features_hash_and_metrics(
    tmp_path: Path,
    history,  # type: ignore[no-untyped-def]
    trained: TrainingResult,
) -> None:
    path = save_artifact(tmp_path, trained.manifest, trained.booster)
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "model.json"]
    loaded = load_model(tmp_path, "v1")
    assert loaded.manifest.features == list(FEATURES)
    assert loaded.manifest.training_data_hash == history_hash(history)
    assert loaded.manifest.metrics == trained.manifest.metrics
    row = trained.dataset[list(FEATURES)].to_numpy(np.float64)[:50]
    in_memory = LoadedModel(manifest=trained.manifest, booster=trained.booster, path=path)
    np.testing.assert_array_equal(
        Predictor(loaded).confidences(row), Predictor(in_memory).confidences(row)
    )
    # Inference runs on one thread (no OpenMP pool fighting the other services for cores).
    config = json.loads(loaded.booster.save_config())
    assert config["learner"]["generic_param"]["nthread"] == "1"
    with pytest.raises(ModelStoreError, match="already exists"):
        save_artifact(tmp_path, trained.manifest, trained.booster)
    newer = trained.manifest.model_copy(
        update={"version": "v2", "created_at": trained.manifest.created_at + 1}
    )
    save_artifact(tmp_path, newer, trained.booster)
    assert [m.version for m in list_versions(tmp_path)] == ["v1", "v2"]
    assert load_model(tmp_path).manifest.version == "v2"
    with pytest.raises(ModelStoreError, match=r"available: v1, v2"):
        load_model(tmp_path, "v9")


def test_a_pinned_version_that_does_not_exist_stops_the_service_with_one_line(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(
            MlAdvisorSettings,
            redis_password="x",
            ml_model_dir=tmp_path,
            ml_model_version="nope",
        )
    assert str(error.value).startswith("config error: ML_MODEL_VERSION='nope'")
    assert "available: none" in str(error.value)


@pytest.fixture(scope="module")
def predictor(trained: TrainingResult, tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    directory = tmp_path_factory.mktemp("models")
    save_artifact(directory, trained.manifest, trained.booster)
    return Predictor(load_model(directory))


feature_rows = arrays(
    np.float64,
    (len(FEATURES),),
    elements=st.floats(-50, 50, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(feature_rows, min_size=1, max_size=8))
def test_shap_contributions_plus_bias_equal_the_margin(
    predictor: Predictor,
    rows: list[np.ndarray],  # type: ignore[type-arg]
) -> None:
    matrix = np.vstack(rows)
    for explained, probability in zip(
        predictor.explain_many(matrix), predictor.confidences(matrix), strict=True
    ):
        total = explained.contributions.sum() + explained.bias
        assert total == pytest.approx(explained.margin, rel=1e-5, abs=1e-5)
        assert explained.confidence == pytest.approx(float(probability), rel=1e-5)
        top = explained.top_features(predictor.names, 5)
        sizes = [abs(f.contribution) for f in top]
        assert sizes == sorted(sizes, reverse=True)
        assert max(sizes) == pytest.approx(float(np.abs(explained.contributions).max()))


def test_shap_on_real_training_rows(predictor: Predictor, trained: TrainingResult) -> None:
    rows = trained.dataset[list(FEATURES)].to_numpy(np.float64)[::97]
    for explained in predictor.explain_many(rows):
        assert explained.contributions.sum() + explained.bias == pytest.approx(
            explained.margin, rel=1e-5, abs=1e-5
        )


def test_auc_matches_its_definition() -> None:
    labels = np.array([0, 0, 1, 1], dtype=np.float64)
    assert auc_score(labels, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert auc_score(labels, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert auc_score(np.ones(3), np.array([0.1, 0.2, 0.3])) is None


def test_psi_is_near_zero_for_the_training_distribution_and_large_after_a_shift() -> None:
    rng = np.random.default_rng(0)
    training = rng.normal(0, 1, 20_000)
    stats = feature_stats(training)
    assert population_stability_index(rng.normal(0, 1, 5_000), stats) < 0.02
    assert population_stability_index(rng.normal(1.5, 1, 5_000), stats) > 0.25


def test_inference_runs_on_one_thread_end_to_end(predictor: Predictor) -> None:
    """Both the booster and each candle's DMatrix are pinned to one thread: a DMatrix left
    at its default (-1, a thread per core) cost ten times the CPU per candle under load."""
    row = np.zeros((1, len(predictor.names)))
    assert predictor._matrix(row).nthread == 1
    assert (
        json.loads(predictor.model.booster.save_config())["learner"]["generic_param"]["nthread"]
        == "1"
    )
