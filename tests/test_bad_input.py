"""Every bad input to `python -m study.search`: one error line, exit status 2, no traceback.

Each case runs the real command in a subprocess and checks the last stderr
line. Cases that need valid data use a full-size synthetic CIFAR-10 file,
because the loader checks the exact image counts.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures_study import full_size_npz, write_search_space  # noqa: F401 (fixture)

from study.cli import EXIT_USAGE
from study.data import EXPECTED_COUNTS

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, full_size_npz):  # noqa: F811
    """Bad files for the cases below, keyed by name, plus the good data file."""
    root = tmp_path_factory.mktemp("bad_input")
    files = {"good_data": full_size_npz}

    raw = full_size_npz.read_bytes()
    files["truncated_data"] = root / "truncated.npz"
    files["truncated_data"].write_bytes(raw[: len(raw) // 3])
    files["corrupt_data"] = root / "corrupt.npz"
    files["corrupt_data"].write_bytes(b"PK\x03\x04" + bytes(range(256)) * 64)

    train, test = EXPECTED_COUNTS
    good = {
        "x_train": np.zeros((train, 32, 32, 3), np.uint8),
        "y_train": (np.arange(train) % 10).astype(np.uint8),
        "x_test": np.zeros((test, 32, 32, 3), np.uint8),
        "y_test": (np.arange(test) % 10).astype(np.uint8),
    }
    variants = {
        "wrong_shape": {"x_train": np.zeros((train, 32, 32), np.uint8)},
        "wrong_dtype": {"x_train": np.zeros((train, 32, 32, 3), np.float64)},
        "wrong_labels": {"y_train": np.full(train, 10, np.uint8)},
    }
    for name, change in variants.items():
        files[name] = root / f"{name}.npz"
        np.savez(files[name], **{**good, **change})

    import keras

    files["other_weights"] = root / "other_model.weights.h5"
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    other.save_weights(files["other_weights"])

    spaces = {
        "unknown_key": {"training": {"epochs_head": 1, "epochs_whatever": 2}},
        "wrong_type": {"training": {"epochs_head": "ten"}},
        "empty_choice": {"hyperparameters": {"units_1": {"type": "choice", "values": []}}},
        "min_above_max": {
            "hyperparameters": {"dropout": {"type": "float", "min": 0.5, "max": 0.1}}
        },
    }
    for name, change in spaces.items():
        files[f"space_{name}"] = write_search_space(root, name=name, **change)

    blocker = root / "a_file"
    blocker.write_text("")
    files["unwritable_results"] = blocker / "results"

    # A project created by another experiment: its study_config.json differs.
    files["other_project_results"] = root / "other_results"
    project = files["other_project_results"] / "baseline" / "size_1000"
    project.mkdir(parents=True)
    (project / "study_config.json").write_text(json.dumps({
        "search_space_fingerprint": "0" * 64, "size": 1000, "seed": 0,
        "data_sha256": "1" * 64, "weights": "none",
    }))
    return files


# name: (arguments, with {file} placeholders from `inputs`; fragment of the error line)
CASES = {
    "size_not_number": (["--size", "ten"], "'ten' is not an integer"),
    "size_zero": (["--size", "0"], "'0' must be an integer >= 1"),
    "size_negative": (["--size=-5"], "'-5' must be an integer >= 1"),
    # The data file of the two size cases does not exist: sizes are checked
    # before the data is loaded.
    "size_above_pool": (
        ["--size", "60000", "--data", "{good_data}.absent"], "60000 exceeds the pool",
    ),
    "size_without_validation_images": (
        ["--size", "50", "--data", "{good_data}.absent"], "validation image",
    ),
    "data_missing": (["--size", "1000", "--data", "{good_data}.absent"], "not found"),
    "data_truncated": (["--size", "1000", "--data", "{truncated_data}"], "truncated.npz"),
    "data_corrupt": (["--size", "1000", "--data", "{corrupt_data}"], "corrupt.npz"),
    "data_wrong_shape": (["--size", "1000", "--data", "{wrong_shape}"], "shape"),
    "data_wrong_dtype": (["--size", "1000", "--data", "{wrong_dtype}"], "dtype"),
    "data_wrong_labels": (["--size", "1000", "--data", "{wrong_labels}"], "label"),
    "weights_other_architecture": (
        ["--size", "1000", "--data", "{good_data}", "--weights", "{other_weights}"],
        "other_model.weights.h5",
    ),
    "search_space_unknown": (
        ["--size", "1000", "--search-space", "no_such_space"], "unknown search space",
    ),
    "search_space_unknown_key": (
        ["--size", "1000", "--search-space", "{space_unknown_key}"], "epochs_whatever",
    ),
    "search_space_wrong_type": (
        ["--size", "1000", "--search-space", "{space_wrong_type}"], "epochs_head",
    ),
    "search_space_empty_choice": (
        ["--size", "1000", "--search-space", "{space_empty_choice}"], "units_1",
    ),
    "search_space_min_above_max": (
        ["--size", "1000", "--search-space", "{space_min_above_max}"], "dropout",
    ),
    "results_not_writable": (
        ["--size", "1000", "--results-dir", "{unwritable_results}"], "not writable",
    ),
    "project_of_other_experiment": (
        ["--size", "1000", "--search-space", "baseline", "--data", "{good_data}",
         "--weights", "none", "--results-dir", "{other_project_results}"],
        "--overwrite",
    ),
    "tuner_unknown": (["--size", "1000", "--tuner", "foo"], "invalid choice: 'foo'"),
}


@pytest.mark.parametrize(("args", "fragment"), CASES.values(), ids=CASES.keys())
def test_bad_input_one_line_exit_2(inputs, args, fragment):
    argv = [arg.format(**inputs) for arg in args]

    result = subprocess.run(
        [sys.executable, "-m", "study.search", *argv],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=300,
    )

    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == EXIT_USAGE, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert len(errors) == 1, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    assert fragment in errors[0]
