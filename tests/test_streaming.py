"""Streaming cached features from the memory map: batches, order and training."""

import keras
import numpy as np
import pytest

from study.errors import ConfigError
from study.streaming import LIMIT_VARIABLE, FeatureBatches, FeatureRows, in_memory_limit_bytes


@pytest.fixture
def memmap(tmp_path):
    """A 50-row cache array on disk whose row i contains the value i."""
    path = tmp_path / "train.npy"
    rows = np.repeat(np.arange(50, dtype=np.float32)[:, None], 4, axis=1)
    np.save(path, rows)
    return np.load(path, mmap_mode="r")


def served(dataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    return np.concatenate(xs), np.concatenate(ys)


def test_every_row_once_with_its_label(memmap):
    rows = np.array([3, 40, 7, 12, 33, 21, 8], dtype=np.int64)
    labels = rows * 10
    dataset = FeatureBatches(FeatureRows(memmap, rows), labels, batch_size=3, shuffle=True)
    assert len(dataset) == 3
    x, y = served(dataset)
    assert sorted(x[:, 0].astype(int)) == sorted(rows)
    np.testing.assert_array_equal(x[:, 0] * 10, y)


def test_shuffle_changes_per_epoch_and_repeats_per_seed(memmap):
    rows = np.arange(50)

    def orders(seed):
        dataset = FeatureBatches(FeatureRows(memmap, rows), rows, 8, shuffle=True, seed=seed)
        first = served(dataset)[1]
        dataset.on_epoch_end()
        return first, served(dataset)[1]

    first, second = orders(1)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(orders(1)[0], first)
    assert not np.array_equal(orders(2)[0], first)


def test_without_shuffle_keeps_order(memmap):
    rows = np.array([9, 2, 5])
    x, y = served(FeatureBatches(FeatureRows(memmap, rows), rows, 2))
    np.testing.assert_array_equal(x[:, 0], [9, 2, 5])


def test_label_count_must_match(memmap):
    with pytest.raises(ValueError, match="3 feature rows but 2 labels"):
        FeatureBatches(FeatureRows(memmap, np.arange(3)), np.arange(2), 2)


def test_nbytes_counts_selected_rows(memmap):
    assert FeatureRows(memmap, np.arange(10)).nbytes == 10 * 4 * 4


def test_training_matches_arrays(memmap, tmp_path):
    rows = np.arange(0, 50, 2)
    labels = (rows % 3).astype(np.int64)

    def trained(inputs):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        model.compile("sgd", "sparse_categorical_crossentropy")
        model.fit(**inputs, epochs=2, verbose=0)
        return model.get_weights()

    from_arrays = trained({"x": np.asarray(memmap[rows]) / 50, "y": labels,
                           "batch_size": 5, "shuffle": False})
    np.save(tmp_path / "scaled.npy", np.asarray(memmap) / 50)
    scaled = np.load(tmp_path / "scaled.npy", mmap_mode="r")
    streamed = trained({"x": FeatureBatches(FeatureRows(scaled, rows), labels, 5)})
    for a, b in zip(from_arrays, streamed):
        # Float rounding differs slightly between the two input pipelines; a
        # row or label out of place would differ by orders of magnitude more.
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_limit_from_environment(monkeypatch):
    monkeypatch.setenv(LIMIT_VARIABLE, "2")
    assert in_memory_limit_bytes() == 2 * 2**20
    monkeypatch.setenv(LIMIT_VARIABLE, "lots")
    with pytest.raises(ConfigError, match="is not a number of MiB"):
        in_memory_limit_bytes()
    monkeypatch.delenv(LIMIT_VARIABLE)
    assert in_memory_limit_bytes() > 0
