"""The hypermodel: builds for every search-space value, freezes and unfreezes the
backbone as each phase needs, preprocesses like Keras, and reads weights once."""

import keras
import keras_tuner
import numpy as np
import pytest

from fixtures_study import write_search_space
from study.hypermodel import (
    BACKBONE_NAME,
    Preprocess,
    TransferHyperModel,
    backbone_of,
    build_model,
    compile_model,
    freeze_backbone,
    head_model,
    unfreeze_backbone,
    upper_model,
)
from study.search_space import DEFAULTS, load_search_space
from study.weights import ResolvedWeights, resolve_weights

HEAD_WEIGHTS = {
    "dense_1/kernel",
    "dense_1/bias",
    "dense_2/kernel",
    "dense_2/bias",
    "predictions/kernel",
    "predictions/bias",
}
NO_WEIGHTS = resolve_weights("none")


def resnet50(image_size: int = 32) -> keras.Model:
    return keras.applications.ResNet50(
        include_top=False,
        weights=None,
        input_shape=(image_size, image_size, 3),
        name=BACKBONE_NAME,
    )


def default_values(**changes) -> dict:
    return {**DEFAULTS, "units_1": 8, "units_2": 8, **changes}


def covering_values(space) -> list[dict]:
    """Value sets that together use every choice and both bounds of every range.

    Set i takes the i-th candidate of each tuned hyperparameter, cycling through
    shorter candidate lists, so three sets cover the default space.
    """
    candidates = {}
    for h in space.hyperparameters:
        if h.type == "choice":
            candidates[h.name] = list(h.values)
        elif h.type in ("int", "float"):
            candidates[h.name] = [h.min, h.max]
    count = max(len(values) for values in candidates.values())
    return [
        {name: values[i % len(values)] for name, values in candidates.items()}
        for i in range(count)
    ]


DEFAULT_SPACE = load_search_space("default")
COVERING = covering_values(DEFAULT_SPACE)


def hyperparameters_with(space, values: dict) -> keras_tuner.HyperParameters:
    """Declare `space` and set `values`, which later declarations return."""
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    hp.values.update(values)
    return hp


def batchnorm_layers(model: keras.Model) -> list:
    return [
        layer
        for layer in backbone_of(model).layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def moving_statistics(layers) -> dict:
    return {
        layer.name: (
            keras.ops.convert_to_numpy(layer.moving_mean).copy(),
            keras.ops.convert_to_numpy(layer.moving_variance).copy(),
        )
        for layer in layers
    }


def tiny_batch(count: int = 8):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
    y = np.arange(count) % 10
    return x, y


def test_covering_values_use_every_value():
    for h in DEFAULT_SPACE.hyperparameters:
        used = {values[h.name] for values in COVERING if h.name in values}
        if h.type == "choice":
            assert used == set(h.values), h.name
        elif h.type in ("int", "float"):
            assert used == {h.min, h.max}, h.name


@pytest.mark.parametrize("values", COVERING, ids=[f"set{i}" for i in range(len(COVERING))])
def test_default_space_builds(values):
    hypermodel = TransferHyperModel(DEFAULT_SPACE, NO_WEIGHTS)

    model = hypermodel.build(hyperparameters_with(DEFAULT_SPACE, values))

    assert model.output_shape == (None, 10)
    assert model.get_layer("dense_1").units == values["units_1"]
    assert model.get_layer("dense_2").units == values["units_2"]
    learning_rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    assert learning_rate == pytest.approx(values["learning_rate_head"])


BUILD_CASES = {
    "scale_32_lower_bounds": default_values(
        preprocessing="scale", image_size=32, dropout=0.0, l2=0.0, units_1=1, units_2=1
    ),
    "caffe_64_upper_bounds": default_values(
        preprocessing="caffe", image_size=64, dropout=0.5, l2=1e-4, units_1=512, units_2=512
    ),
}


@pytest.mark.parametrize("values", BUILD_CASES.values(), ids=BUILD_CASES.keys())
def test_build_model_values(values):
    size = values["image_size"]

    model = build_model(values, resnet50(size))

    names = {layer.name for layer in model.layers}
    assert model.output_shape == (None, 10)
    assert model.get_layer("preprocess").mode == values["preprocessing"]
    assert ("resize" in names) == (size != 32)
    assert backbone_of(model).input_shape == (None, size, size, 3)
    assert ("dropout_1" in names) == (values["dropout"] > 0)
    assert ("dropout_2" in names) == (values["dropout"] > 0)
    regularizer = model.get_layer("dense_1").kernel_regularizer
    assert (regularizer is not None) == (values["l2"] > 0)
    assert model.get_layer("dense_1").units == values["units_1"]


def test_resized_model_predicts():
    model = build_model(default_values(image_size=64), resnet50(64))
    x, _ = tiny_batch(2)

    probabilities = model.predict(x, verbose=0)

    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.fixture(scope="module")
def default_model():
    """The default space's model at its default values, as built for phase 1."""
    hypermodel = TransferHyperModel(DEFAULT_SPACE, NO_WEIGHTS)
    return hypermodel.build(hyperparameters_with(DEFAULT_SPACE, {}))


def test_build_returns_compiled_model(default_model):
    learning_rate = float(keras.ops.convert_to_numpy(default_model.optimizer.learning_rate))

    assert default_model.compiled
    assert default_model.loss == "sparse_categorical_crossentropy"
    assert learning_rate == pytest.approx(1e-3)
    assert default_model.output_shape == (None, 10)


def test_phase1_trains_head_only(default_model):
    paths = {weight.path for weight in default_model.trainable_weights}

    assert paths == HEAD_WEIGHTS
    assert not backbone_of(default_model).trainable


@pytest.fixture(scope="module")
def depth_model():
    """One model that the depth tests unfreeze in turn. No test trains it."""
    model = build_model(default_values(), resnet50())
    freeze_backbone(model)
    return model


@pytest.mark.parametrize("bn_policy", ["trainable", "frozen"])
@pytest.mark.parametrize("depth", ["conv3", "conv4", "conv5"])
def test_finetune_depth_trainable_layers(depth_model, depth, bn_policy):
    layers = backbone_of(depth_model).layers
    start = next(i for i, layer in enumerate(layers) if layer.name.startswith(f"{depth}_"))

    returned = unfreeze_backbone(depth_model, depth, bn_policy)

    assert start > 0
    assert not any(layer.trainable for layer in layers[:start])
    for layer in layers[start:]:
        is_batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        expected = not (is_batchnorm and bn_policy == "frozen")
        assert layer.trainable == expected, layer.name
    assert returned == [layer.name for layer in layers if layer.trainable and layer.weights]


def test_finetune_all_trains_every_conv(depth_model):
    unfreeze_backbone(depth_model, "all", "frozen")

    convolutions = [
        layer for layer in backbone_of(depth_model).layers
        if isinstance(layer, keras.layers.Conv2D)
    ]

    assert convolutions
    assert all(layer.trainable for layer in convolutions)
    assert not any(layer.trainable for layer in batchnorm_layers(depth_model))


def test_unknown_depth_rejected(depth_model):
    with pytest.raises(ValueError, match="conv9"):
        unfreeze_backbone(depth_model, "conv9", "frozen")


def test_frozen_batchnorm_keeps_statistics():
    model = build_model(default_values(), resnet50())
    freeze_backbone(model)
    unfreeze_backbone(model, "all", "frozen")
    compile_model(model, "adam", 1e-3)
    # One eager step is several times faster than tracing the training step.
    model.run_eagerly = True
    layers = batchnorm_layers(model)
    before = moving_statistics(layers)
    conv_before = keras.ops.convert_to_numpy(backbone_of(model).get_layer("conv1_conv").kernel).copy()
    x, y = tiny_batch()

    model.fit(x, y, epochs=1, batch_size=8, verbose=0)

    after = moving_statistics(layers)
    conv_after = keras.ops.convert_to_numpy(backbone_of(model).get_layer("conv1_conv").kernel)
    assert layers
    assert not any(layer.trainable for layer in layers)
    # The fit did train the backbone, so unchanged statistics mean frozen ones.
    assert not np.array_equal(conv_before, conv_after)
    for name, (mean, variance) in before.items():
        assert np.array_equal(mean, after[name][0]), name
        assert np.array_equal(variance, after[name][1]), name


@pytest.mark.parametrize("depth", ["all", "conv5"])
def test_trainable_batchnorm_updates_statistics(depth):
    model = build_model(default_values(), resnet50())
    freeze_backbone(model)
    unfreeze_backbone(model, depth, "trainable")
    compile_model(model, "adam", 1e-3)
    # One eager step is several times faster than tracing the training step.
    model.run_eagerly = True
    layers = batchnorm_layers(model)
    before = moving_statistics(layers)
    x, y = tiny_batch()

    model.fit(x, y, epochs=1, batch_size=8, verbose=0)

    after = moving_statistics(layers)
    assert layers
    for layer in layers:
        # Batch normalization before the fine-tuned stages stays frozen.
        fine_tuned = depth == "all" or layer.name.startswith(f"{depth}_")
        mean_changed = not np.array_equal(before[layer.name][0], after[layer.name][0])
        variance_changed = not np.array_equal(before[layer.name][1], after[layer.name][1])
        assert layer.trainable == fine_tuned, layer.name
        assert mean_changed == fine_tuned, layer.name
        assert variance_changed == fine_tuned, layer.name


def random_pixels(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, size=(4, 32, 32, 3)).astype(np.float32)


def test_caffe_matches_keras_preprocessing():
    x = random_pixels()
    original = x.copy()

    output = keras.ops.convert_to_numpy(Preprocess("caffe")(x))

    expected = keras.applications.resnet50.preprocess_input(x.copy())
    np.testing.assert_allclose(output, expected, rtol=1e-6, atol=1e-4)
    assert np.array_equal(x, original)


def test_scale_divides_by_255():
    x = random_pixels()
    original = x.copy()

    output = keras.ops.convert_to_numpy(Preprocess("scale")(x))

    np.testing.assert_allclose(output, x / 255.0, rtol=1e-6)
    assert np.array_equal(x, original)


def test_preprocess_accepts_uint8():
    x = random_pixels().astype(np.uint8)

    output = keras.ops.convert_to_numpy(Preprocess("scale")(x))

    assert output.dtype == np.float32
    np.testing.assert_allclose(output, x.astype(np.float32) / 255.0, rtol=1e-6)


def test_preprocess_config_round_trip():
    layer = Preprocess("scale", name="preprocess")

    restored = Preprocess.from_config(layer.get_config())

    assert restored.mode == "scale"
    assert restored.name == "preprocess"


def test_unknown_preprocessing_rejected():
    with pytest.raises(ValueError, match="torch"):
        Preprocess("torch")


@pytest.fixture(scope="module")
def notop_weights(tmp_path_factory):
    """A ResNet50 no-top weights file with random values, and those values."""
    path = tmp_path_factory.mktemp("weights") / "resnet50_notop.weights.h5"
    model = resnet50()
    model.save_weights(path)
    return path, model.get_weights()


def test_weights_file_read_once(notop_weights, tmp_path, monkeypatch):
    path, expected = notop_weights
    space = load_search_space(
        str(
            write_search_space(
                tmp_path,
                hyperparameters={"image_size": {"type": "choice", "values": [32, 64]}},
            )
        )
    )
    weights = ResolvedWeights(spec="x", route="local", notop_path=str(path))
    hypermodel = TransferHyperModel(space, weights)
    real_resnet50 = keras.applications.ResNet50
    requested = []

    def spy(*args, **kwargs):
        requested.append(kwargs.get("weights"))
        return real_resnet50(*args, **kwargs)

    monkeypatch.setattr(keras.applications, "ResNet50", spy)

    first = hypermodel.build(hyperparameters_with(space, {"image_size": 32}))
    # A second build at another image size reuses the arrays read by the first.
    second = hypermodel.build(hyperparameters_with(space, {"image_size": 64}))

    assert requested == [str(path), None]
    assert backbone_of(second).input_shape == (None, 64, 64, 3)
    for name, model in (("first", first), ("second", second)):
        arrays = backbone_of(model).get_weights()
        assert len(arrays) == len(expected), name
        assert all(np.array_equal(a, b) for a, b in zip(arrays, expected)), name


@pytest.fixture(scope="module")
def mixed_model():
    """The default model built under the mixed_float16 dtype policy."""
    hypermodel = TransferHyperModel(DEFAULT_SPACE, NO_WEIGHTS, dtype_policy="mixed_float16")
    return hypermodel.build(hyperparameters_with(DEFAULT_SPACE, {}))


def test_mixed_policy_computes_in_float16(mixed_model):
    assert mixed_model.get_layer("dense_1").compute_dtype == "float16"
    assert mixed_model.get_layer("dense_1").kernel.dtype == "float32"
    assert backbone_of(mixed_model).get_layer("conv1_conv").compute_dtype == "float16"


def test_mixed_policy_keeps_float32_output(mixed_model):
    images = np.zeros((2, 32, 32, 3), np.uint8)

    assert mixed_model.get_layer("predictions").compute_dtype == "float32"
    assert mixed_model.predict(images, verbose=0).dtype == np.float32


def test_mixed_policy_scales_loss(mixed_model):
    assert isinstance(mixed_model.optimizer, keras.optimizers.LossScaleOptimizer)


def test_mixed_head_model_scales_loss(mixed_model):
    head = head_model(mixed_model)
    compile_model(head, "adam", 1e-3)

    assert head.dtype_policy.name == "mixed_float16"
    assert isinstance(head.optimizer, keras.optimizers.LossScaleOptimizer)


def test_mixed_upper_model_scales_loss(mixed_model):
    unfreeze_backbone(mixed_model, "conv5", "frozen")
    upper = upper_model(mixed_model, "conv4_block6_out")
    compile_model(upper, "adam", 1e-5)

    assert upper.dtype_policy.name == "mixed_float16"
    assert isinstance(upper.optimizer, keras.optimizers.LossScaleOptimizer)


def test_build_restores_global_policy(mixed_model):
    assert keras.config.dtype_policy().name == "float32"


def test_unknown_dtype_policy_rejected():
    with pytest.raises(ValueError, match="'float64' is not supported; use one of float32"):
        TransferHyperModel(DEFAULT_SPACE, NO_WEIGHTS, dtype_policy="float64")
