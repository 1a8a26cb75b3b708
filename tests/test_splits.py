"""Class-balanced subsets and the holdout and test validation protocols."""

import numpy as np
import pytest

from study.data import Cifar10
from study.errors import SplitError
from study.splits import check_size, make_splits, select_subset

POOL_PER_CLASS = 120
TINY_PER_CLASS = 60
TEST_PER_CLASS = 3


@pytest.fixture
def labels_pool() -> np.ndarray:
    """Labels of a shuffled pool with POOL_PER_CLASS images of each class."""
    labels = np.repeat(np.arange(10, dtype=np.uint8), POOL_PER_CLASS)
    return np.random.default_rng(7).permutation(labels)


def encode_index(images: np.ndarray, offset: int = 0) -> None:
    """Write each image's index (plus `offset`) into its first two pixels."""
    index = np.arange(len(images)) + offset
    images[:, 0, 0, 0] = index % 256
    images[:, 0, 0, 1] = index // 256


def decode_index(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0, 0].astype(np.int64) + 256 * images[:, 0, 0, 1].astype(np.int64)


@pytest.fixture
def tiny_cifar10() -> Cifar10:
    """Return a tiny Cifar10 of 10 classes x 60 training images, each encoding its index.

    Test images are numbered from 1,000 so they cannot pass for training images.
    """
    rng = np.random.default_rng(3)
    y_train = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), TINY_PER_CLASS))
    y_test = np.repeat(np.arange(10, dtype=np.uint8), TEST_PER_CLASS)
    x_train = np.zeros((len(y_train), 32, 32, 3), np.uint8)
    x_test = np.zeros((len(y_test), 32, 32, 3), np.uint8)
    encode_index(x_train)
    encode_index(x_test, offset=1000)
    return Cifar10(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        source="synthetic",
        kind="npz",
        sha256="0" * 64,
    )


def class_counts(labels, indices) -> list[int]:
    return np.bincount(labels[indices], minlength=10).tolist()


def drawn(subset) -> np.ndarray:
    return np.concatenate([subset.train_indices, subset.validation_indices])


def test_even_size_per_class(labels_pool):
    subset = select_subset(labels_pool, 1000, seed=0)

    assert class_counts(labels_pool, drawn(subset)) == [100] * 10


def test_remainder_to_lowest_classes(labels_pool):
    subset = select_subset(labels_pool, 1003, seed=0)

    assert class_counts(labels_pool, drawn(subset)) == [101] * 3 + [100] * 7


def test_validation_stratified(labels_pool):
    subset = select_subset(labels_pool, 1000, seed=0, validation_fraction=0.1)

    assert class_counts(labels_pool, subset.validation_indices) == [10] * 10
    assert class_counts(labels_pool, subset.train_indices) == [90] * 10


def test_validation_remainder_spread(labels_pool):
    # round(1003 * 0.2) = 201 validation images: class 0 gets the extra one.
    subset = select_subset(labels_pool, 1003, seed=0, validation_fraction=0.2)

    assert class_counts(labels_pool, subset.validation_indices) == [21] + [20] * 9


def test_train_validation_disjoint(labels_pool):
    subset = select_subset(labels_pool, 1003, seed=5, validation_fraction=0.1)

    union = np.union1d(subset.train_indices, subset.validation_indices)
    assert np.intersect1d(subset.train_indices, subset.validation_indices).size == 0
    assert union.size == 1003
    assert len(subset.train_indices) + len(subset.validation_indices) == 1003


def test_indices_sorted(labels_pool):
    subset = select_subset(labels_pool, 500, seed=2)

    assert np.all(np.diff(subset.train_indices) > 0)
    assert np.all(np.diff(subset.validation_indices) > 0)


def test_same_seed_same_subset(labels_pool):
    first = select_subset(labels_pool, 500, seed=11)
    second = select_subset(labels_pool, 500, seed=11)

    assert np.array_equal(first.train_indices, second.train_indices)
    assert np.array_equal(first.validation_indices, second.validation_indices)


def test_other_seed_other_subset(labels_pool):
    first = select_subset(labels_pool, 500, seed=11)
    second = select_subset(labels_pool, 500, seed=12)

    assert not np.array_equal(first.train_indices, second.train_indices)
    assert not np.array_equal(first.validation_indices, second.validation_indices)


def test_zero_fraction_no_validation(labels_pool):
    subset = select_subset(labels_pool, 30, seed=0, validation_fraction=0.0)

    assert subset.validation_indices.size == 0
    assert class_counts(labels_pool, subset.train_indices) == [3] * 10


def test_numpy_integer_size(labels_pool):
    subset = select_subset(labels_pool, np.int64(200), seed=0)

    assert subset.size == 200
    assert isinstance(subset.size, int)


def unbalanced_pool() -> np.ndarray:
    """Class 9 has only 50 images, the others POOL_PER_CLASS."""
    counts = [POOL_PER_CLASS] * 9 + [50]
    return np.repeat(np.arange(10, dtype=np.uint8), counts)


# Each case: size, validation fraction, pool (None: labels_pool), fragment.
BAD_SUBSETS = [
    pytest.param(0, 0.1, None, "positive integer, got 0", id="zero"),
    pytest.param(-10, 0.1, None, "positive integer, got -10", id="negative"),
    pytest.param(True, 0.1, None, "positive integer, got True", id="bool"),
    pytest.param(100.0, 0.1, None, "positive integer, got 100.0", id="float"),
    pytest.param("100", 0.1, None, "positive integer, got '100'", id="string"),
    pytest.param(1201, 0.1, None, "exceeds the pool: 1200 images", id="larger-than-pool"),
    pytest.param(
        600, 0.1, unbalanced_pool, "at most 50 in one class", id="larger-than-class"
    ),
    pytest.param(50, 0.1, None, "fewer than one per class", id="validation-below-one-per-class"),
    pytest.param(100, 1.0, None, "must be in [0, 1)", id="fraction-one"),
    pytest.param(100, -0.1, None, "must be in [0, 1)", id="fraction-negative"),
    pytest.param(5, 0.0, None, "smaller than the 10 classes", id="size-below-classes"),
    pytest.param(10, 0.95, None, "without training images", id="class-without-images"),
]


@pytest.mark.parametrize("size, fraction, pool, fragment", BAD_SUBSETS)
def test_bad_subset_rejected(labels_pool, size, fraction, pool, fragment):
    labels = labels_pool if pool is None else pool()

    with pytest.raises(SplitError) as caught:
        select_subset(labels, size, seed=0, validation_fraction=fraction)

    assert fragment in str(caught.value)


def test_test_protocol_trains_all(tiny_cifar10):
    splits = make_splits(tiny_cifar10, 200, seed=0, protocol="test")

    assert len(splits.x_train) == 200
    assert splits.subset.validation_indices.size == 0
    assert splits.x_val is tiny_cifar10.x_test
    assert splits.y_val is tiny_cifar10.y_test
    assert splits.x_test is tiny_cifar10.x_test
    assert splits.sizes() == {"train": 200, "validation": 30, "test": 30}


def test_test_protocol_ignores_fraction(tiny_cifar10):
    splits = make_splits(tiny_cifar10, 200, seed=0, protocol="test", validation_fraction=0.5)

    assert len(splits.x_train) == 200


def test_holdout_keeps_test_apart(tiny_cifar10):
    splits = make_splits(tiny_cifar10, 200, seed=0, protocol="holdout")

    train_ids = decode_index(splits.x_train)
    validation_ids = decode_index(splits.x_val)
    assert splits.x_test is tiny_cifar10.x_test
    assert splits.y_test is tiny_cifar10.y_test
    assert np.array_equal(train_ids, splits.subset.train_indices)
    assert np.array_equal(validation_ids, splits.subset.validation_indices)
    assert (train_ids < len(tiny_cifar10.x_train)).all()
    assert (validation_ids < len(tiny_cifar10.x_train)).all()
    assert np.intersect1d(train_ids, validation_ids).size == 0
    assert splits.sizes() == {"train": 180, "validation": 20, "test": 30}


def test_holdout_labels_match_images(tiny_cifar10):
    splits = make_splits(tiny_cifar10, 200, seed=4)

    assert splits.protocol == "holdout"
    assert np.array_equal(splits.y_train, tiny_cifar10.y_train[decode_index(splits.x_train)])
    assert np.array_equal(splits.y_val, tiny_cifar10.y_train[decode_index(splits.x_val)])
    assert np.bincount(splits.y_val, minlength=10).tolist() == [2] * 10


def test_unknown_protocol_rejected(tiny_cifar10):
    with pytest.raises(SplitError) as caught:
        make_splits(tiny_cifar10, 200, seed=0, protocol="kfold")

    message = str(caught.value)
    assert "'kfold'" in message
    assert "holdout, test" in message


def test_size_error_through_make_splits(tiny_cifar10):
    with pytest.raises(SplitError) as caught:
        make_splits(tiny_cifar10, 601, seed=0)

    assert "exceeds the pool" in str(caught.value)


@pytest.mark.parametrize(
    ("size", "protocol", "fragment"),
    [
        (60000, "holdout", "exceeds the pool"),
        (50, "holdout", "fewer than one per class"),
        (5, "test", "smaller than the 10 classes"),
        (1000, "kfold", "unknown validation protocol"),
    ],
)
def test_check_size_without_data(size, protocol, fragment):
    with pytest.raises(SplitError, match=fragment):
        check_size(size, protocol)


@pytest.mark.parametrize(("size", "protocol"), [(50000, "holdout"), (95, "holdout"), (50, "test")])
def test_check_size_accepts_possible(size, protocol):
    check_size(size, protocol)
