"""The phase-1 feature cache: keys, validity checks, and equivalence with the full model."""

import json
import logging
import os

import keras
import numpy as np
import pytest

from fixtures_study import tiny_cifar10, write_search_space
from study.errors import ConfigError
from study.features import CUT_BELOW_STAGE, FeatureCache, _extract, feature_key
from study.hypermodel import (
    TransferHyperModel,
    build_model,
    feature_extractor,
    head_model,
    unfreeze_backbone,
    upper_model,
)
from study.records import RECORD_FILE
from study.search_space import load_search_space
from study.streaming import LIMIT_VARIABLE
from study.splits import make_splits
from study.tuner import TwoPhaseTuner, make_oracle
from study.weights import resolve_weights

KEY_FIELDS = {
    "data_sha256": "a" * 64,
    "weights_sha256": "b" * 64,
    "preprocessing": "caffe",
    "image_size": 32,
    "cut": "pool",
    "dtype": "float16",
}


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A randomly initialised ResNet50 saved as a local weights file."""
    keras.utils.set_random_seed(7)
    path = tmp_path_factory.mktemp("weights") / "random_resnet50_notop.weights.h5"
    keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    ).save_weights(path)
    return resolve_weights(str(path))


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    folder = tmp_path_factory.mktemp("space")
    # SGD, because Adam's first steps follow the sign of each gradient, which
    # turns float rounding in near-zero gradients into visible differences.
    training = {"epochs_head": 3, "epochs_finetune": 2, "optimizer": "sgd"}
    return load_search_space(
        str(write_search_space(folder, training=training, tuner={"max_trials": 1}))
    )


@pytest.fixture(scope="module")
def data():
    return tiny_cifar10()


@pytest.mark.parametrize("field", sorted(KEY_FIELDS))
def test_key_changes_with_field(field):
    changed = dict(KEY_FIELDS)
    changed[field] = {"image_size": 64, "dtype": "float32"}.get(field, "other")
    assert feature_key(**changed) != feature_key(**KEY_FIELDS)


def test_key_is_stable():
    assert feature_key(**KEY_FIELDS) == feature_key(**dict(KEY_FIELDS))


def test_cache_matches_extractor(tmp_path, data, space, weights_file):
    hypermodel = TransferHyperModel(space, weights_file)
    features = FeatureCache(data, hypermodel, tmp_path, dtype="float32").get("caffe", 32)
    extractor = feature_extractor(hypermodel.make_backbone(32), "caffe", 32)
    expected = extractor.predict(data.x_test, verbose=0)
    assert features.test.dtype == np.float32
    np.testing.assert_allclose(features.test, expected, rtol=1e-5, atol=1e-5)


def test_float16_entry_is_rounded_extractor_output(tmp_path, data, space, weights_file):
    hypermodel = TransferHyperModel(space, weights_file)
    features = FeatureCache(data, hypermodel, tmp_path).get("caffe", 32)
    extractor = feature_extractor(hypermodel.make_backbone(32), "caffe", 32)
    expected = extractor.predict(data.x_test, verbose=0)
    assert features.test.dtype == np.float16
    # float16 keeps 11 significant bits: a relative error of at most 2**-11.
    np.testing.assert_allclose(features.test, expected, rtol=2**-11 + 1e-6, atol=1e-6)
    assert not np.array_equal(features.test, expected)


def test_dtypes_have_separate_entries(tmp_path, data, space, weights_file):
    hypermodel = TransferHyperModel(space, weights_file)
    half = FeatureCache(data, hypermodel, tmp_path).get("caffe", 32)
    full = FeatureCache(data, hypermodel, tmp_path, dtype="float32").get("caffe", 32)
    assert half.key != full.key
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2


class _ConstantExtractor:
    """Stands in for a backbone whose outputs are all `value`."""

    def __init__(self, value):
        self.value = value
        self.output = keras.KerasTensor((None, 4))

    def predict(self, images, **kwargs):
        return np.full((len(images), 4), self.value, np.float32)


def test_float16_overflow_refused(tmp_path):
    images = np.zeros((3, 32, 32, 3), np.uint8)
    path = tmp_path / "train.npy"
    _extract(_ConstantExtractor(6e4), images, path, "features train", "float16")
    assert np.load(path).max() == pytest.approx(6e4, rel=1e-3)
    with pytest.raises(ConfigError, match="up to 7e\\+04 do not fit float16.*--feature-dtype float32"):
        _extract(_ConstantExtractor(7e4), images, tmp_path / "test.npy", "features test", "float16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.npy"]


def test_unknown_dtype_refused(data, space, weights_file):
    with pytest.raises(ValueError, match="'float64' is not supported; use one of float16"):
        FeatureCache(data, TransferHyperModel(space, weights_file), dtype="float64")


def test_cache_shapes(tmp_path, data, space, weights_file):
    features = FeatureCache(data, TransferHyperModel(space, weights_file), tmp_path).get("caffe", 32)
    assert features.train.shape == (len(data.x_train), 2048)
    assert features.test.shape == (len(data.x_test), 2048)


def test_cache_entry_reused(tmp_path, data, space, weights_file, caplog):
    hypermodel = TransferHyperModel(space, weights_file)
    first = FeatureCache(data, hypermodel, tmp_path).get("caffe", 32)
    with caplog.at_level(logging.INFO, logger="study.features"):
        second = FeatureCache(data, hypermodel, tmp_path).get("caffe", 32)
    assert "using cache entry" in caplog.text
    assert "computed" not in caplog.text
    np.testing.assert_array_equal(first.train, second.train)


@pytest.mark.parametrize("damage", ["flip_bytes", "truncate", "meta"])
def test_corrupt_entry_rebuilt(tmp_path, data, space, weights_file, caplog, damage):
    hypermodel = TransferHyperModel(space, weights_file)
    good = np.array(FeatureCache(data, hypermodel, tmp_path).get("caffe", 32).train)
    (entry,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    train_file = entry / "train.npy"
    if damage == "flip_bytes":
        raw = bytearray(train_file.read_bytes())
        raw[-100:] = bytes(100)
        train_file.write_bytes(bytes(raw))
    elif damage == "truncate":
        train_file.write_bytes(train_file.read_bytes()[:1000])
    else:
        (entry / "meta.json").write_text("{not json")

    with caplog.at_level(logging.WARNING, logger="study.features"):
        rebuilt = FeatureCache(data, hypermodel, tmp_path).get("caffe", 32)
    assert "rebuilding" in caplog.text
    np.testing.assert_allclose(rebuilt.train, good, rtol=1e-5, atol=1e-5)


def test_cache_unavailable_without_weights(tmp_path, data, space):
    cache = FeatureCache(data, TransferHyperModel(space, resolve_weights("none")), tmp_path)
    assert "randomly initialised" in cache.unavailable_reason()
    with pytest.raises(ValueError, match="randomly initialised"):
        cache.get("caffe", 32)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_head_model_shares_weights(space, weights_file, data):
    hypermodel = TransferHyperModel(space, weights_file)
    values = {h.name: h.default for h in space.hyperparameters}
    model = build_model(values, hypermodel.make_backbone(32))
    extractor = feature_extractor(hypermodel.make_backbone(32), values["preprocessing"], 32)
    head = head_model(model)
    assert {id(w) for w in head.weights} <= {id(w) for w in model.weights}

    through_head = head.predict(extractor.predict(data.x_test, verbose=0), verbose=0)
    through_model = model.predict(data.x_test, verbose=0)
    np.testing.assert_allclose(through_head, through_model, rtol=1e-4, atol=1e-5)


def run_one_trial(
    space, weights, data, results_dir, cache_dir, dtype="float32", dtype_policy="float32"
):
    hypermodel = TransferHyperModel(space, weights, dtype_policy=dtype_policy)
    cache = FeatureCache(data, hypermodel, cache_dir, dtype=dtype) if cache_dir else None
    tuner = TwoPhaseTuner(
        hypermodel,
        make_oracle("random", 1, 0, max_epochs=1),
        search_space=space,
        size=20,
        study_seed=0,
        feature_cache=cache,
        directory=str(results_dir),
        project_name="size_20",
        overwrite=True,
    )
    # One batch per epoch (10 training images, batch size 10), so the
    # shuffling order cannot make the two paths differ.
    tuner.search(splits=make_splits(data, 20, 0, "holdout", 0.5), verbose=0)
    return json.loads((results_dir / "size_20" / "trial_0" / RECORD_FILE).read_text())


@pytest.fixture(scope="module")
def both_paths(tmp_path_factory, space, weights_file, data):
    root = tmp_path_factory.mktemp("paths")
    cached = run_one_trial(space, weights_file, data, root / "cached", root / "features")
    full = run_one_trial(space, weights_file, data, root / "full", None)
    return cached, full


@pytest.fixture(scope="module")
def streamed(tmp_path_factory, space, weights_file, data, both_paths):
    """The cached path again, with a memory limit of 0 so every input is streamed."""
    root = tmp_path_factory.mktemp("streamed")
    os.environ[LIMIT_VARIABLE] = "0"
    try:
        return run_one_trial(space, weights_file, data, root / "streamed", root / "features")
    finally:
        del os.environ[LIMIT_VARIABLE]


@pytest.fixture(scope="module")
def float16_path(tmp_path_factory, space, weights_file, data):
    root = tmp_path_factory.mktemp("float16")
    return run_one_trial(
        space, weights_file, data, root / "cached", root / "features", dtype="float16"
    )


def test_float16_trial_close_to_float32(both_paths, float16_path):
    cached, _ = both_paths
    for phase in ("head", "finetune"):
        assert float16_path["phases"][phase]["feature_dtype"] == "float16"
        assert cached["phases"][phase]["feature_dtype"] == "float32"
        np.testing.assert_allclose(
            float16_path["phases"][phase]["history"]["loss"],
            cached["phases"][phase]["history"]["loss"],
            rtol=1e-2,
        )


@pytest.fixture(scope="module")
def mixed_precision_path(tmp_path_factory, space, weights_file, data):
    root = tmp_path_factory.mktemp("mixed")
    return run_one_trial(
        space, weights_file, data, root / "cached", root / "features",
        dtype_policy="mixed_float16",
    )


def test_mixed_precision_trial_on_cache(both_paths, mixed_precision_path):
    cached, _ = both_paths
    assert mixed_precision_path["status"] == "completed"
    assert mixed_precision_path["dtype_policy"] == "mixed_float16"
    assert cached["dtype_policy"] == "float32"
    assert keras.config.dtype_policy().name == "float32"
    for phase in ("head", "finetune"):
        # float16 arithmetic moves the losses a little, not far.
        np.testing.assert_allclose(
            mixed_precision_path["phases"][phase]["history"]["loss"],
            cached["phases"][phase]["history"]["loss"],
            rtol=5e-2,
        )


def test_streamed_inputs_match_in_memory(both_paths, streamed):
    cached, _ = both_paths
    for phase in ("head", "finetune"):
        assert streamed["phases"][phase]["streamed"] is True
        assert cached["phases"][phase]["streamed"] is False
        for metric in ("loss", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(
                streamed["phases"][phase]["history"][metric],
                cached["phases"][phase]["history"][metric],
                rtol=1e-5, atol=1e-6,
            )
        assert streamed["phases"][phase]["test_loss"] == pytest.approx(
            cached["phases"][phase]["test_loss"], rel=1e-5
        )


def test_paths_recorded(both_paths):
    cached, full = both_paths
    assert cached["phases"]["head"]["path"] == "cached_features"
    assert cached["phases"]["finetune"]["path"] == "cached_activations"
    assert full["phases"]["head"]["path"] == "full_model"
    assert full["phases"]["finetune"]["path"] == "full_model"


@pytest.mark.parametrize("metric", ["loss", "accuracy", "val_loss", "val_accuracy"])
def test_finetune_history_matches_full_model(both_paths, metric):
    cached, full = both_paths
    np.testing.assert_allclose(
        cached["phases"]["finetune"]["history"][metric],
        full["phases"]["finetune"]["history"][metric],
        rtol=1e-3, atol=1e-4,
    )


def test_finetune_test_loss_matches_full_model(both_paths):
    cached, full = both_paths
    assert cached["phases"]["finetune"]["test_loss"] == pytest.approx(
        full["phases"]["finetune"]["test_loss"], rel=1e-3
    )


def test_checkpoint_fits_full_model(both_paths):
    # The predictions come from the checkpoint loaded into the full model, so
    # they agree with the cached path only if the checkpoint is the full model's.
    cached, full = both_paths
    assert cached["predictions"]["test_accuracy"] == pytest.approx(
        full["predictions"]["test_accuracy"], abs=1e-6
    )


@pytest.mark.parametrize("depth", sorted(CUT_BELOW_STAGE))
def test_upper_model_matches_full_model(space, weights_file, data, depth):
    hypermodel = TransferHyperModel(space, weights_file)
    values = {h.name: h.default for h in space.hyperparameters}
    model = build_model(values, hypermodel.make_backbone(32))
    unfreeze_backbone(model, depth, "frozen")
    cut = CUT_BELOW_STAGE[depth]
    extractor = feature_extractor(hypermodel.make_backbone(32), values["preprocessing"], 32, cut)
    upper = upper_model(model, cut)
    trainable = {id(w) for w in upper.trainable_weights}
    assert trainable == {id(w) for w in model.trainable_weights}

    through_upper = upper.predict(extractor.predict(data.x_test, verbose=0), verbose=0)
    through_model = model.predict(data.x_test, verbose=0)
    np.testing.assert_allclose(through_upper, through_model, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("metric", ["loss", "accuracy", "val_loss", "val_accuracy"])
def test_head_history_matches_full_model(both_paths, metric):
    cached, full = both_paths
    np.testing.assert_allclose(
        cached["phases"]["head"]["history"][metric],
        full["phases"]["head"]["history"][metric],
        rtol=1e-3, atol=1e-4,
    )


def test_head_test_loss_matches_full_model(both_paths):
    cached, full = both_paths
    assert cached["phases"]["head"]["test_loss"] == pytest.approx(
        full["phases"]["head"]["test_loss"], rel=1e-3
    )


def test_finetune_starts_from_same_head(both_paths):
    cached, full = both_paths
    assert cached["phases"]["finetune"]["history"]["loss"][0] == pytest.approx(
        full["phases"]["finetune"]["history"]["loss"][0], rel=1e-3
    )
