"""Helpers and fixtures for the search tests: tiny search spaces and data sets.

Test modules import what they use from here, fixtures included, so pytest
registers them per module.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from study.data import EXPECTED_COUNTS, IMAGE_SHAPE, NUM_CLASSES, Cifar10

# Training settings for short trials: one epoch per phase, and half of each
# training subset held out for validation, so a size of 20 gives 10 training
# and 10 validation images. Batches of 10 divide the sizes the tests use, and
# a partial last batch would make TensorFlow trace each step function again.
TINY_TRAINING = {
    "epochs_head": 1,
    "epochs_finetune": 1,
    "batch_size": 10,
    "optimizer": "adam",
    "early_stopping_patience": 0,
    "validation_protocol": "holdout",
    "validation_fraction": 0.5,
}

# Small head widths, and fine-tuning from conv5 only, because back-propagating
# through the whole backbone makes every trial slower on CPU.
TINY_HYPERPARAMETERS = {
    "units_1": {"type": "choice", "values": [8, 16], "default": 8},
    "units_2": 8,
    "learning_rate_head": {"type": "float", "min": 1e-4, "max": 1e-2, "sampling": "log"},
    "learning_rate_finetune": 1e-5,
    "dropout": 0.0,
    "l2": 0.0,
    "preprocessing": "caffe",
    "image_size": 32,
    "bn_policy": "frozen",
    "finetune_depth": "conv5",
}


def toml_value(value) -> str:
    """Format a Python value as a TOML value (inline tables for dicts)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def write_search_space(
    folder: Path,
    name: str = "tiny",
    training: dict | None = None,
    tuner: dict | None = None,
    hyperparameters: dict | None = None,
) -> Path:
    """Write `<folder>/<name>.toml` from the tiny settings updated by the arguments."""
    sections = {
        "training": {**TINY_TRAINING, **(training or {})},
        "tuner": {"oracle": "random", "max_trials": 2, **(tuner or {})},
        "hyperparameters": {**TINY_HYPERPARAMETERS, **(hyperparameters or {})},
    }
    lines = [f"name = {toml_value(name)}", 'description = "tiny search space for tests"']
    for section, table in sections.items():
        lines.append(f"\n[{section}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in table.items())
    path = Path(folder) / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def class_patterns(seed: int = 0) -> np.ndarray:
    """One random 32x32x3 uint8 image per class, so labels are learnable."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(NUM_CLASSES, *IMAGE_SHAPE), dtype=np.uint8)


def tiny_cifar10(per_class_train: int = 4, per_class_test: int = 1) -> Cifar10:
    """A CIFAR-10 stand-in with a few images per class, each a noisy class pattern."""
    rng = np.random.default_rng(1)
    patterns = class_patterns()
    y_train = (np.arange(per_class_train * NUM_CLASSES) % NUM_CLASSES).astype(np.uint8)
    y_test = (np.arange(per_class_test * NUM_CLASSES) % NUM_CLASSES).astype(np.uint8)

    def images(labels):
        noise = rng.integers(0, 32, size=(len(labels), *IMAGE_SHAPE), dtype=np.uint8)
        return patterns[labels] // 2 + noise

    return Cifar10(
        x_train=images(y_train),
        y_train=y_train,
        x_test=images(y_test),
        y_test=y_test,
        source="synthetic",
        kind="npz",
        sha256="0" * 64,
    )


@pytest.fixture(scope="session")
def full_size_npz(tmp_path_factory) -> Path:
    """An .npz with CIFAR-10's exact counts (50,000 train / 10,000 test images).

    The command line loads data with strict counts, so a tiny copy would be
    rejected. The images repeat one pattern per class. The file is about
    180 MB and takes a few seconds to write.
    """
    patterns = class_patterns()
    train_count, test_count = EXPECTED_COUNTS
    y_train = (np.arange(train_count) % NUM_CLASSES).astype(np.uint8)
    y_test = (np.arange(test_count) % NUM_CLASSES).astype(np.uint8)
    path = tmp_path_factory.mktemp("full_size") / "cifar10.npz"
    np.savez(
        path,
        x_train=patterns[y_train],
        y_train=y_train,
        x_test=patterns[y_test],
        y_test=y_test,
    )
    return path
