"""Reading Keras 2 ResNet50 weights from a TF.js layers model, on tiny synthetic files."""

import json

import numpy as np
import pytest

from study.errors import WeightsError
from study.tfjs import assign_weights, keras3_layer_name, read_manifest, read_tfjs_weights

# Keras 2 tensor name -> shape. The values are generated so that no two
# elements anywhere in the buffer are equal.
TENSOR_SHAPES = {
    "conv1/kernel": (3, 3, 3, 4),
    "conv1/bias": (4,),
    "bn_conv1/gamma": (4,),
    "bn_conv1/beta": (4,),
    "bn_conv1/moving_mean": (4,),
    "bn_conv1/moving_variance": (4,),
    "res2a_branch2b/kernel": (1, 1, 4, 2),
    "res2a_branch2b/bias": (2,),
    "bn3b_branch1/gamma": (3,),
    "bn3b_branch1/beta": (3,),
    "bn3b_branch1/moving_mean": (3,),
    "bn3b_branch1/moving_variance": (3,),
    "fc1000/kernel": (4, 2),
    "fc1000/bias": (2,),
}

# Keras 3 layer -> Keras 2 tensor names in `layer.set_weights()` order.
EXPECTED_LAYERS = {
    "conv1_conv": ["conv1/kernel", "conv1/bias"],
    "conv1_bn": [
        "bn_conv1/gamma",
        "bn_conv1/beta",
        "bn_conv1/moving_mean",
        "bn_conv1/moving_variance",
    ],
    "conv2_block1_2_conv": ["res2a_branch2b/kernel", "res2a_branch2b/bias"],
    "conv3_block2_0_bn": [
        "bn3b_branch1/gamma",
        "bn3b_branch1/beta",
        "bn3b_branch1/moving_mean",
        "bn3b_branch1/moving_variance",
    ],
    "predictions": ["fc1000/kernel", "fc1000/bias"],
}


def tensor_values() -> dict[str, np.ndarray]:
    values, start = {}, 0.0
    for name, shape in TENSOR_SHAPES.items():
        count = int(np.prod(shape))
        values[name] = (np.arange(count, dtype=np.float32) + start).reshape(shape) * 0.5
        start += count
    return values


def shuffled_names() -> list[str]:
    names = list(TENSOR_SHAPES)
    order = np.random.default_rng(1).permutation(len(names))
    shuffled = [names[i] for i in order]
    assert shuffled != names
    return shuffled


def write_tfjs_model(folder, values, names, entry_overrides=None):
    """Write model.json and two shards, and return the byte offset of the cut.

    The cut falls in the middle of conv1/kernel, two bytes into one of its
    floats, so that tensor straddles the shard boundary.
    """
    folder.mkdir(parents=True, exist_ok=True)
    buffer = b"".join(values[name].astype("<f4").tobytes() for name in names)
    straddling = names.index("conv1/kernel")
    start = sum(values[name].nbytes for name in names[:straddling])
    cut = start + values["conv1/kernel"].nbytes // 2 + 2
    paths = ["group1-shard1of2.bin", "group1-shard2of2.bin"]
    (folder / paths[0]).write_bytes(buffer[:cut])
    (folder / paths[1]).write_bytes(buffer[cut:])

    entries = []
    for name in names:
        entry = {"name": name, "shape": list(values[name].shape), "dtype": "float32"}
        entry.update((entry_overrides or {}).get(name, {}))
        entries.append(entry)
    spec = {
        "format": "layers-model",
        "modelTopology": {},
        "weightsManifest": [{"paths": paths, "weights": entries}],
    }
    (folder / "model.json").write_text(json.dumps(spec))
    return cut


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "ResNet50"
    write_tfjs_model(folder, tensor_values(), shuffled_names())
    return folder


def test_layers_renamed(model_dir):
    weights = read_tfjs_weights(model_dir)

    assert sorted(weights) == sorted(EXPECTED_LAYERS)


@pytest.mark.parametrize("layer", sorted(EXPECTED_LAYERS))
def test_variables_ordered_and_exact(model_dir, layer):
    values = tensor_values()

    arrays = read_tfjs_weights(model_dir)[layer]

    assert len(arrays) == len(EXPECTED_LAYERS[layer])
    for array, name in zip(arrays, EXPECTED_LAYERS[layer]):
        assert array.dtype == np.float32
        assert array.shape == values[name].shape
        assert np.array_equal(array, values[name])


def test_manifest_entries_in_buffer_order(model_dir):
    paths, entries = read_manifest(model_dir / "model.json")

    assert paths == ["group1-shard1of2.bin", "group1-shard2of2.bin"]
    assert [entry["name"] for entry in entries] == shuffled_names()


def test_suffixed_variable_names(tmp_path):
    # Keras 2 appended ':0' to variable names and '_1' on a name clash.
    values = tensor_values()
    renamed = {
        "conv1/kernel": "conv1/kernel:0",
        "bn_conv1/moving_mean": "bn_conv1/moving_mean_1",
    }
    names = shuffled_names()
    overrides = {old: {"name": new} for old, new in renamed.items()}
    write_tfjs_model(tmp_path / "m", values, names, entry_overrides=overrides)

    weights = read_tfjs_weights(tmp_path / "m")

    assert np.array_equal(weights["conv1_conv"][0], values["conv1/kernel"])
    assert np.array_equal(weights["conv1_bn"][2], values["bn_conv1/moving_mean"])


@pytest.mark.parametrize(
    "keras2_name, keras3_name",
    [
        ("conv1", "conv1_conv"),
        ("bn_conv1", "conv1_bn"),
        ("fc1000", "predictions"),
        ("res2a_branch1", "conv2_block1_0_conv"),
        ("res2a_branch2a", "conv2_block1_1_conv"),
        ("res2a_branch2b", "conv2_block1_2_conv"),
        ("res2c_branch2c", "conv2_block3_3_conv"),
        ("bn2a_branch2a", "conv2_block1_1_bn"),
        ("bn3b_branch1", "conv3_block2_0_bn"),
        ("res4f_branch2c", "conv4_block6_3_conv"),
        ("bn5c_branch2b", "conv5_block3_2_bn"),
    ],
)
def test_keras3_layer_name(keras2_name, keras3_name):
    assert keras3_layer_name(keras2_name) == keras3_name


@pytest.mark.parametrize(
    "keras2_name", ["dense_1", "conv1_conv", "res2a_branch3", "bn2A_branch1", "res2a_branch2d"]
)
def test_unknown_layer_name(keras2_name):
    with pytest.raises(WeightsError) as caught:
        keras3_layer_name(keras2_name)

    assert repr(keras2_name) in str(caught.value)


def test_truncated_shard(model_dir):
    shard = model_dir / "group1-shard2of2.bin"
    shard.write_bytes(shard.read_bytes()[:-4])

    with pytest.raises(WeightsError) as caught:
        read_tfjs_weights(model_dir)

    message = str(caught.value)
    expected = sum(4 * int(np.prod(shape)) for shape in TENSOR_SHAPES.values())
    assert str(model_dir) in message
    assert f"hold {expected - 4} bytes" in message
    assert f"describes {expected}" in message


def test_missing_shard(model_dir):
    shard = model_dir / "group1-shard1of2.bin"
    shard.unlink()

    with pytest.raises(WeightsError) as caught:
        read_tfjs_weights(model_dir)

    message = str(caught.value)
    assert str(shard) in message
    assert "missing" in message


def test_missing_model_json(tmp_path):
    with pytest.raises(WeightsError) as caught:
        read_tfjs_weights(tmp_path)

    assert str(tmp_path / "model.json") in str(caught.value)


def test_unknown_layer_in_manifest(tmp_path):
    values = tensor_values()
    values["dense_7/kernel"] = values.pop("fc1000/kernel")
    names = [name if name != "fc1000/kernel" else "dense_7/kernel" for name in shuffled_names()]
    write_tfjs_model(tmp_path / "m", values, names)

    with pytest.raises(WeightsError) as caught:
        read_tfjs_weights(tmp_path / "m")

    assert "'dense_7'" in str(caught.value)


def test_quantized_entry(tmp_path):
    quantization = {"dtype": "uint8", "min": -1.0, "scale": 0.01}
    overrides = {"bn_conv1/beta": {"quantization": quantization}}
    write_tfjs_model(tmp_path / "m", tensor_values(), shuffled_names(), overrides)

    with pytest.raises(WeightsError) as caught:
        read_tfjs_weights(tmp_path / "m")

    message = str(caught.value)
    assert "'bn_conv1/beta'" in message
    assert "quantized" in message


def test_float16_entry(tmp_path):
    overrides = {"conv1/bias": {"dtype": "float16"}}
    write_tfjs_model(tmp_path / "m", tensor_values(), shuffled_names(), overrides)

    with pytest.raises(WeightsError) as caught:
        read_tfjs_weights(tmp_path / "m")

    message = str(caught.value)
    assert "'conv1/bias'" in message
    assert "float16" in message


def test_two_weight_groups(model_dir):
    model_json = model_dir / "model.json"
    spec = json.loads(model_json.read_text())
    group = spec["weightsManifest"][0]
    spec["weightsManifest"] = [
        {"paths": group["paths"][:1], "weights": group["weights"][:2]},
        {"paths": group["paths"][1:], "weights": group["weights"][2:]},
    ]
    model_json.write_text(json.dumps(spec))

    with pytest.raises(WeightsError) as caught:
        read_tfjs_weights(model_dir)

    assert "2 weight groups" in str(caught.value)


def test_batch_norm_lacks_variance(tmp_path):
    values = tensor_values()
    del values["bn3b_branch1/moving_variance"]
    names = [name for name in shuffled_names() if name in values]
    write_tfjs_model(tmp_path / "m", values, names)

    with pytest.raises(WeightsError) as caught:
        read_tfjs_weights(tmp_path / "m")

    message = str(caught.value)
    assert "conv3_block2_0_bn" in message
    assert "moving_variance" in message


def tiny_model(filters: int = 4):
    """Stem-like model whose layer names match the synthetic manifest."""
    import keras

    inputs = keras.Input(shape=(8, 8, 3))
    x = keras.layers.Conv2D(filters, 3, name="conv1_conv")(inputs)
    x = keras.layers.BatchNormalization(name="conv1_bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(2, name="predictions")(x)
    return keras.Model(inputs, outputs)


def test_assign_weights_values_land(model_dir):
    weights = read_tfjs_weights(model_dir)
    model = tiny_model()

    assigned = assign_weights(model, weights)

    assert assigned == (3 * 3 * 3 * 4 + 4) + 4 * 4 + (4 * 2 + 2)
    for layer in ("conv1_conv", "conv1_bn", "predictions"):
        landed = model.get_layer(layer).get_weights()
        assert len(landed) == len(weights[layer])
        for actual, expected in zip(landed, weights[layer]):
            assert np.array_equal(actual, expected)


def test_assign_weights_shape_mismatch(model_dir):
    weights = read_tfjs_weights(model_dir)
    model = tiny_model(filters=5)

    with pytest.raises(WeightsError) as caught:
        assign_weights(model, weights)

    message = str(caught.value)
    assert "conv1_conv" in message
    assert "(3, 3, 3, 4)" in message
    assert "(3, 3, 3, 5)" in message


def test_assign_weights_missing_layer(model_dir):
    weights = read_tfjs_weights(model_dir)
    del weights["conv1_bn"]

    with pytest.raises(WeightsError) as caught:
        assign_weights(tiny_model(), weights)

    assert "conv1_bn" in str(caught.value)
