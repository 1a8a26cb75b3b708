"""Class-balanced training subsets and the validation protocol.

A trial trains on `size` images drawn from the 50,000-image training pool. Two
validation protocols exist:

- `holdout` (the default): a class-stratified fraction of those `size` images
  is held out as validation data. The test set is never used for selection.
- `test`: all `size` images train and the test set is the validation data.
  This is how the original notebooks ran. It reproduces their numbers, but it
  selects hyperparameters and epochs on the test set, so its test accuracy is
  optimistic.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from study.data import EXPECTED_COUNTS, NUM_CLASSES, Cifar10
from study.errors import SplitError

PROTOCOLS = ("holdout", "test")
DEFAULT_VALIDATION_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class Subset:
    """Indices into the training pool for one training-set size.

    Attributes:
        size: number of images drawn from the pool (train + validation).
        seed: seed that drew them.
        train_indices: pool indices used for training, sorted.
        validation_indices: pool indices held out for validation, sorted;
            empty when the validation fraction is 0.
    """

    size: int
    seed: int
    train_indices: np.ndarray
    validation_indices: np.ndarray


@dataclasses.dataclass(frozen=True)
class Splits:
    """Arrays for one trial, and the protocol that produced them."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    protocol: str
    subset: Subset

    def sizes(self) -> dict[str, int]:
        return {
            "train": len(self.x_train),
            "validation": len(self.x_val),
            "test": len(self.x_test),
        }


def _spread(total: int, parts: int) -> np.ndarray:
    """Split `total` into `parts` near-equal counts; the first parts get the extra."""
    counts = np.full(parts, total // parts, dtype=np.int64)
    counts[: total % parts] += 1
    return counts


def _min_size(validation_fraction: float) -> int:
    """Smallest size whose holdout split gives every class a validation image."""
    size = NUM_CLASSES
    while round(size * validation_fraction) < NUM_CLASSES:
        size += 1
    return size


def select_subset(
    labels: np.ndarray,
    size: int,
    seed: int,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
) -> Subset:
    """Draw a class-balanced subset and carve a stratified validation split.

    Each class gets `size // 10` images; the remaining `size % 10` go one each
    to the lowest class ids, so the counts depend only on `size`. Which images
    are drawn depends only on `seed`. The validation split takes
    `round(size * validation_fraction)` of them, spread over the classes the
    same way.

    Args:
        labels: (N,) integer labels of the training pool.
        size: number of images to draw.
        seed: seed for the draw.
        validation_fraction: fraction of `size` held out, in [0, 1).

    Raises:
        SplitError: `size` is not a positive integer, exceeds what a class can
            supply, or leaves a class without a validation or training image.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise SplitError(f"training-set size must be a positive integer, got {size!r}")
    if not 0.0 <= validation_fraction < 1.0:
        raise SplitError(
            f"validation fraction must be in [0, 1), got {validation_fraction!r}"
        )
    labels = np.asarray(labels).reshape(-1)
    pool = [np.flatnonzero(labels == c) for c in range(NUM_CLASSES)]
    per_class = _spread(int(size), NUM_CLASSES)
    smallest = min(len(p) for p in pool)
    if size > len(labels) or (per_class > [len(p) for p in pool]).any():
        raise SplitError(
            f"training-set size {size} exceeds the pool: {len(labels)} images, "
            f"at most {smallest} in one class, so at most "
            f"{smallest * NUM_CLASSES} for a class-balanced subset"
        )

    if size < NUM_CLASSES:
        raise SplitError(
            f"training-set size {size} is smaller than the {NUM_CLASSES} classes; "
            f"use a size of at least {NUM_CLASSES}"
        )
    n_validation = int(round(size * validation_fraction))
    validation_per_class = _spread(n_validation, NUM_CLASSES)
    if n_validation and validation_per_class.min() == 0:
        raise SplitError(
            f"training-set size {size} gives {n_validation} validation image(s) at "
            f"validation fraction {validation_fraction}, fewer than one per class; "
            f"use a size of at least {_min_size(validation_fraction)}, or raise "
            "training.validation_fraction in the search-space file"
        )
    if (validation_per_class >= per_class).any():
        raise SplitError(
            f"training-set size {size} leaves a class without training images "
            f"after holding out {n_validation} for validation; use a larger size "
            "or a smaller validation fraction"
        )

    rng = np.random.default_rng(seed)
    train, validation = [], []
    for c in range(NUM_CLASSES):
        drawn = rng.permutation(pool[c])[: per_class[c]]
        validation.append(drawn[: validation_per_class[c]])
        train.append(drawn[validation_per_class[c] :])
    return Subset(
        size=int(size),
        seed=int(seed),
        train_indices=np.sort(np.concatenate(train)),
        validation_indices=np.sort(np.concatenate(validation)),
    )


def make_splits(
    data: Cifar10,
    size: int,
    seed: int,
    protocol: str = "holdout",
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
) -> Splits:
    """Build the train, validation and test arrays for one training-set size.

    Args:
        data: the loaded data set.
        size: number of images drawn from the training pool.
        seed: seed for the draw.
        protocol: `holdout` or `test` (see the module docstring).
        validation_fraction: fraction held out under `holdout`; ignored under
            `test`.

    Raises:
        SplitError: on an unknown protocol or an impossible size.
    """
    fraction = _held_out_fraction(protocol, validation_fraction)
    subset = select_subset(data.y_train, size, seed, fraction)
    if protocol == "holdout":
        x_val = data.x_train[subset.validation_indices]
        y_val = data.y_train[subset.validation_indices]
    else:
        x_val, y_val = data.x_test, data.y_test
    return Splits(
        x_train=data.x_train[subset.train_indices],
        y_train=data.y_train[subset.train_indices],
        x_val=x_val,
        y_val=y_val,
        x_test=data.x_test,
        y_test=data.y_test,
        protocol=protocol,
        subset=subset,
    )


def check_size(
    size: int, protocol: str = "holdout", validation_fraction: float = DEFAULT_VALIDATION_FRACTION
) -> None:
    """Check a size against CIFAR-10's pool before the data is loaded.

    Uses the class-balanced pool of 50,000 images that every CIFAR-10 copy
    has, so an impossible size fails in a second instead of after loading the
    data. `make_splits` checks again against the loaded labels.

    Raises:
        SplitError: on an unknown protocol or an impossible size.
    """
    fraction = _held_out_fraction(protocol, validation_fraction)
    balanced_pool = np.arange(EXPECTED_COUNTS[0]) % NUM_CLASSES
    select_subset(balanced_pool, size, 0, fraction)


def _held_out_fraction(protocol: str, validation_fraction: float) -> float:
    """Return the fraction of the drawn images held out for validation under `protocol`."""
    if protocol not in PROTOCOLS:
        raise SplitError(
            f"unknown validation protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}"
        )
    return validation_fraction if protocol == "holdout" else 0.0
