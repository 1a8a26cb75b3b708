"""Shared fixtures: tiny CIFAR-10 copies in every supported layout, and real inputs."""

import os

# TensorFlow reads this when it is first imported, so it must be set before any
# test module imports keras.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from study.data import BATCHES_DIR, DATA_ENV, TEST_BATCH, TRAIN_BATCHES
from study.weights import resolve_weights

TRAIN_PER_BATCH = 4
TINY_TRAIN = TRAIN_PER_BATCH * len(TRAIN_BATCHES)
TINY_TEST = 10

# Image 0 of the tiny training set has constant colour planes, with one G pixel
# at (row 5, column 7) set apart, so a mixed-up channel layout shows.
RED, GREEN, BLUE = 200, 100, 50
MARKED_ROW, MARKED_COLUMN, MARKED_GREEN = 5, 7, 77


def is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def to_rows(images: np.ndarray) -> np.ndarray:
    """Convert (N, 32, 32, 3) images to the official (N, 3072) channel-first rows."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), 3 * 32 * 32)


def tiny_arrays() -> dict[str, np.ndarray]:
    """Return a small CIFAR-10 in the layout of `keras.datasets.cifar10.load_data()`."""
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, size=(TINY_TRAIN, 32, 32, 3), dtype=np.uint8)
    x_train[0, :, :, 0] = RED
    x_train[0, :, :, 1] = GREEN
    x_train[0, :, :, 2] = BLUE
    x_train[0, MARKED_ROW, MARKED_COLUMN, 1] = MARKED_GREEN
    x_test = rng.integers(0, 256, size=(TINY_TEST, 32, 32, 3), dtype=np.uint8)
    return {
        "x_train": x_train,
        "y_train": (np.arange(TINY_TRAIN) % 10).astype(np.uint8),
        "x_test": x_test,
        "y_test": (np.arange(TINY_TEST) % 10).astype(np.uint8),
    }


def pickle_batch(images, labels, batch_label: bytes, protocol: int) -> bytes:
    """Pickle one batch as the official files do: a dict with bytes keys."""
    batch = {
        b"batch_label": batch_label,
        b"labels": [int(label) for label in labels],
        b"data": to_rows(images),
        b"filenames": [f"image_{i:05d}.png".encode() for i in range(len(images))],
    }
    return pickle.dumps(batch, protocol=protocol)


@dataclasses.dataclass
class CifarFiles:
    """Writer of tiny CIFAR-10 copies under `root`, in each supported layout.

    `replace` maps a batch name to the raw bytes to store instead of the
    generated batch, and `omit` lists batch names to leave out.
    """

    root: Path
    arrays: dict[str, np.ndarray]

    def npz(self, name: str = "cifar10.npz", **arrays) -> Path:
        """Write an .npz. Keyword arrays replace the tiny ones, and None drops one."""
        merged = {**self.arrays, **arrays}
        path = self.root / name
        np.savez(path, **{k: v for k, v in merged.items() if v is not None})
        return path

    def batches(self, protocol: int = 2, replace=None, omit=()) -> dict[str, bytes]:
        x_train, y_train = self.arrays["x_train"], self.arrays["y_train"]
        raw = {}
        for i, name in enumerate(TRAIN_BATCHES):
            part = slice(i * TRAIN_PER_BATCH, (i + 1) * TRAIN_PER_BATCH)
            label = f"training batch {i + 1} of 5".encode()
            raw[name] = pickle_batch(x_train[part], y_train[part], label, protocol)
        raw[TEST_BATCH] = pickle_batch(
            self.arrays["x_test"], self.arrays["y_test"], b"testing batch 1 of 1", protocol
        )
        raw.update(replace or {})
        return {name: data for name, data in raw.items() if name not in omit}

    def folder(self, name: str = "extracted", protocol: int = 2, replace=None, omit=()) -> Path:
        """Write `<name>/cifar-10-batches-py/` and return that inner folder."""
        folder = self.root / name / BATCHES_DIR
        folder.mkdir(parents=True)
        for batch, data in self.batches(protocol, replace, omit).items():
            (folder / batch).write_bytes(data)
        return folder

    def tarball(
        self, name: str = "cifar-10-python.tar.gz", protocol: int = 2, replace=None, omit=()
    ) -> Path:
        """Write an archive with the official member names and layout."""
        path = self.root / name
        with tarfile.open(path, "w:gz") as tar:
            for batch, data in self.batches(protocol, replace, omit).items():
                member = tarfile.TarInfo(f"{BATCHES_DIR}/{batch}")
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
        return path


@pytest.fixture
def cifar_files(tmp_path) -> CifarFiles:
    return CifarFiles(root=tmp_path, arrays=tiny_arrays())


@pytest.fixture(scope="session")
def real_data_path() -> Path:
    """Path of the real CIFAR-10 copy from STUDY_DATA, which CI must set."""
    path = os.environ.get(DATA_ENV)
    if not path:
        reason = (
            f"{DATA_ENV} is not set; set it to a full CIFAR-10 .npz "
            "(50,000 train / 10,000 test images) to run the real-data tests"
        )
        if is_ci():
            pytest.fail(f"{reason}, which CI must run")
        pytest.skip(reason)
    return Path(path)


@pytest.fixture
def fresh_weights_cache():
    """Clear `resolve_weights`' per-process cache before and after a test."""
    resolve_weights.cache_clear()
    yield
    resolve_weights.cache_clear()
