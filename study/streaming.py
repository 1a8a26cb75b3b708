"""Batches of cached backbone outputs read from the memory map, for inputs too large for memory.

The cache keeps each entry as a memory-mapped `.npy` file. A trial normally
copies the rows of its split into memory (`Features.for_splits`), which is the
fastest path. The activations below conv3 at 224 px take about 3 MiB per image
in float32, so a large split does not fit in memory. `FeatureBatches` then
reads one batch at a time from the file instead. Rows of a batch are read in file order,
which keeps the reads as sequential as the shuffle allows.

`in_memory_limit_bytes` decides between the two: half of the memory available
when the trial starts, or `$STUDY_FEATURES_IN_MEMORY_MIB` when set.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import keras
import numpy as np

LIMIT_VARIABLE = "STUDY_FEATURES_IN_MEMORY_MIB"


@dataclasses.dataclass(frozen=True)
class FeatureRows:
    """Rows `rows` of a memory-mapped cache array, not yet read."""

    array: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def nbytes(self) -> int:
        return len(self.rows) * int(np.prod(self.array.shape[1:])) * self.array.dtype.itemsize


def available_memory_bytes() -> int:
    """Memory the system can give without swapping (MemAvailable on Linux)."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def in_memory_limit_bytes() -> int:
    """Largest cached input a trial copies into memory; larger ones are streamed."""
    override = os.environ.get(LIMIT_VARIABLE)
    if override:
        try:
            return int(float(override) * 2**20)
        except ValueError:
            from study.errors import ConfigError

            raise ConfigError(
                f"{LIMIT_VARIABLE}={override!r} is not a number of MiB; "
                "set it to e.g. 4096 or unset it"
            ) from None
    return available_memory_bytes() // 2


class FeatureBatches(keras.utils.PyDataset):
    """A `keras.utils.PyDataset` of (features, labels) batches read from a cache array.

    Args:
        features: the rows to serve.
        labels: one label per row of `features.rows`, in the same order.
        batch_size: rows per batch; the last batch may be smaller.
        shuffle: draw a new order of rows for every epoch.
        seed: seed of the shuffle; the order of epoch k is the same on every run.
        **kwargs: passed to `keras.utils.PyDataset` (workers, max_queue_size).
    """

    def __init__(
        self,
        features: FeatureRows,
        labels: np.ndarray,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(labels) != len(features):
            raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
        self.features = features
        self.labels = np.asarray(labels)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self._epoch = 0
        self._order = self._new_order()

    def _new_order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.labels))
        return np.random.default_rng([self.seed, self._epoch]).permutation(len(self.labels))

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index: int):
        positions = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        rows = self.features.rows[positions]
        # Read in file order, then put the rows back in the drawn order.
        by_row = np.argsort(rows, kind="stable")
        x = np.empty((len(rows), *self.features.array.shape[1:]), dtype=np.float32)
        x[by_row] = self.features.array[rows[by_row]]
        return x, self.labels[positions]

    def on_epoch_end(self):
        self._epoch += 1
        self._order = self._new_order()
