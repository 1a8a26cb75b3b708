"""Loading and validating CIFAR-10 from each supported source."""

import hashlib
import os
import pickle

import numpy as np
import pytest

from conftest import (
    BLUE,
    GREEN,
    MARKED_COLUMN,
    MARKED_GREEN,
    MARKED_ROW,
    RED,
    TINY_TEST,
    TINY_TRAIN,
    to_rows,
)
from study.data import DATA_ENV, load_cifar10
from study.errors import DataError

REAL_SHA256 = "81b8af92bc76caa2376c04b1b05b9f5a58b1bf71ee223d713bcb15c38316f7b3"

# The official batches were pickled by Python 2 at protocol 2. Protocol 4 is
# Python 3's default, and 5 is the highest (and Python 3.14's default).
PROTOCOLS = [2, 4, pickle.HIGHEST_PROTOCOL]


def write_source(cifar_files, kind, protocol=2):
    if kind == "npz":
        return cifar_files.npz()
    if kind == "tarball":
        return cifar_files.tarball(protocol=protocol)
    if kind == "folder":
        return cifar_files.folder(protocol=protocol)
    # The parent of cifar-10-batches-py/ is accepted as well.
    return cifar_files.folder(protocol=protocol).parent


SOURCES = [pytest.param("npz", 2, id="npz")] + [
    pytest.param(kind, protocol, id=f"{kind}-protocol{protocol}")
    for kind in ("tarball", "folder", "parent-folder")
    for protocol in PROTOCOLS
]


@pytest.mark.parametrize("kind, protocol", SOURCES)
def test_source_loads_tiny_copy(cifar_files, kind, protocol):
    path = write_source(cifar_files, kind, protocol)

    data = load_cifar10(path, expected_counts=None)

    expected = cifar_files.arrays
    assert data.x_train.shape == (TINY_TRAIN, 32, 32, 3)
    assert data.x_test.shape == (TINY_TEST, 32, 32, 3)
    assert data.x_train.dtype == np.uint8
    assert data.x_test.dtype == np.uint8
    assert np.array_equal(data.x_train, expected["x_train"])
    assert np.array_equal(data.x_test, expected["x_test"])
    assert data.y_train.shape == (TINY_TRAIN,)
    assert data.y_test.shape == (TINY_TEST,)
    assert data.y_train.dtype == np.uint8
    assert data.y_test.dtype == np.uint8
    assert np.array_equal(data.y_train, expected["y_train"])
    assert np.array_equal(data.y_test, expected["y_test"])


def test_rows_are_channel_first(cifar_files):
    rows = to_rows(cifar_files.arrays["x_train"][:1])

    assert (rows[0, :1024] == RED).all()
    assert rows[0, 1024 + MARKED_ROW * 32 + MARKED_COLUMN] == MARKED_GREEN
    assert (rows[0, 2048:] == BLUE).all()


@pytest.mark.parametrize("kind", ["tarball", "folder"])
def test_batches_become_channel_last(cifar_files, kind):
    data = load_cifar10(write_source(cifar_files, kind), expected_counts=None)

    image = data.x_train[0]
    assert (image[..., 0] == RED).all()
    assert (image[..., 2] == BLUE).all()
    assert image[MARKED_ROW, MARKED_COLUMN, 1] == MARKED_GREEN
    assert image[0, 0, 1] == GREEN


@pytest.mark.parametrize(
    "kind, expected_kind",
    [("npz", "npz"), ("tarball", "tar.gz"), ("folder", "batches")],
)
def test_source_recorded(cifar_files, kind, expected_kind):
    path = write_source(cifar_files, kind)

    data = load_cifar10(path, expected_counts=None)

    assert data.kind == expected_kind
    assert data.source == str(path)
    if kind != "folder":
        assert data.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_folder_digest_covers_batches(cifar_files):
    first = load_cifar10(cifar_files.folder("first"), expected_counts=None)
    changed = cifar_files.batches()["data_batch_2"] + b"."
    second = load_cifar10(
        cifar_files.folder("second", replace={"data_batch_2": changed}),
        expected_counts=None,
    )

    assert first.sha256 != second.sha256


def test_column_labels_flattened(cifar_files):
    y_train = cifar_files.arrays["y_train"].reshape(-1, 1)
    y_test = cifar_files.arrays["y_test"].reshape(-1, 1).astype(np.int64)

    data = load_cifar10(cifar_files.npz(y_train=y_train, y_test=y_test), expected_counts=None)

    assert data.y_train.shape == (TINY_TRAIN,)
    assert data.y_test.shape == (TINY_TEST,)
    assert data.y_test.dtype == np.uint8
    assert np.array_equal(data.y_train, y_train[:, 0])


def test_study_data_env_used(cifar_files, monkeypatch):
    path = cifar_files.npz()
    monkeypatch.setenv(DATA_ENV, str(path))

    data = load_cifar10(None, expected_counts=None)

    assert data.source == str(path)


def npz_without_y_test(files):
    return files.npz(y_test=None)


def npz_with_object_array(files):
    labels = np.empty(len(files.arrays["y_train"]), dtype=object)
    labels[:] = [int(v) for v in files.arrays["y_train"]]
    return files.npz(y_train=labels)


def truncated(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def unsupported_extension(files):
    path = files.root / "cifar10.csv"
    path.write_text("label,pixels\n")
    return path


def batch_not_dict(files):
    return files.folder(replace={"data_batch_1": pickle.dumps([1, 2, 3], protocol=2)})


def batch_without_labels(files):
    raw = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}, protocol=2)
    return files.folder(replace={"data_batch_4": raw})


def batch_with_short_rows(files):
    raw = pickle.dumps({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, protocol=2)
    return files.tarball(replace={"data_batch_5": raw})


def batch_truncated(files):
    raw = files.batches()["test_batch"]
    return files.folder(replace={"test_batch": raw[: len(raw) // 2]})


def with_labels(files, labels):
    return files.npz(y_train=np.asarray(labels))


TINY_COUNTS = (TINY_TRAIN, TINY_TEST)

# Each case: build(cifar_files) -> path, expected_counts, fragments the
# DataError message must contain besides the path.
BAD_INPUTS = [
    pytest.param(
        lambda files: files.root / "absent.npz", None, ["not found"], id="missing-file"
    ),
    pytest.param(unsupported_extension, None, ["unsupported"], id="unsupported-extension"),
    pytest.param(npz_without_y_test, None, ["lacks the arrays y_test"], id="npz-missing-array"),
    pytest.param(
        npz_with_object_array, None, ["could not be read without pickle"], id="npz-object-array"
    ),
    pytest.param(
        lambda files: truncated(files.npz()), None, ["truncated or corrupt"], id="npz-truncated"
    ),
    pytest.param(
        lambda files: truncated(files.tarball()),
        None,
        ["truncated or corrupt"],
        id="tarball-truncated",
    ),
    pytest.param(
        lambda files: files.tarball(omit=["data_batch_3"]),
        None,
        ["lacks the batch file data_batch_3"],
        id="tarball-missing-batch",
    ),
    pytest.param(
        lambda files: files.folder(omit=["test_batch"]),
        None,
        ["lacks the batch file test_batch"],
        id="folder-missing-batch",
    ),
    pytest.param(batch_not_dict, None, ["data_batch_1", "expected a dict"], id="batch-not-dict"),
    pytest.param(
        batch_without_labels,
        None,
        ["data_batch_4", "lacks the 'data' or 'labels' entry"],
        id="batch-missing-labels",
    ),
    pytest.param(
        batch_with_short_rows,
        None,
        ["data_batch_5", "(2, 3000)", "expected (N, 3072)"],
        id="batch-wrong-row-length",
    ),
    pytest.param(
        batch_truncated, None, ["test_batch", "truncated or corrupt"], id="batch-truncated"
    ),
    pytest.param(
        lambda files: files.npz(x_train=files.arrays["x_train"].transpose(0, 3, 1, 2)),
        None,
        ["x_train", "(20, 3, 32, 32)", "expected (N, 32, 32, 3) uint8"],
        id="wrong-image-shape",
    ),
    pytest.param(
        lambda files: files.npz(x_test=files.arrays["x_test"].astype(np.float32)),
        None,
        ["x_test", "dtype float32"],
        id="wrong-image-dtype",
    ),
    pytest.param(
        lambda files: with_labels(files, [10] + [0] * (TINY_TRAIN - 1)),
        None,
        ["y_train", "labels from 0 to 10", "expected 0 to 9"],
        id="label-10",
    ),
    pytest.param(
        lambda files: with_labels(files, [-1] + [0] * (TINY_TRAIN - 1)),
        None,
        ["y_train", "labels from -1 to 0", "expected 0 to 9"],
        id="label-minus-1",
    ),
    pytest.param(
        lambda files: with_labels(files, np.zeros(TINY_TRAIN, np.float32)),
        None,
        ["y_train", "dtype float32", "expected integer class labels"],
        id="labels-not-integer",
    ),
    pytest.param(
        lambda files: with_labels(files, np.zeros(TINY_TRAIN - 1, np.uint8)),
        None,
        ["y_train", f"shape ({TINY_TRAIN - 1},)", f"expected ({TINY_TRAIN},)"],
        id="label-count-mismatch",
    ),
    pytest.param(
        lambda files: files.npz(),
        "default",
        [f"{TINY_TRAIN} train images, expected 50000"],
        id="default-counts",
    ),
    pytest.param(
        lambda files: files.npz(),
        (TINY_TRAIN, TINY_TEST + 1),
        [f"{TINY_TEST} test images, expected {TINY_TEST + 1}"],
        id="test-count",
    ),
]


@pytest.mark.parametrize("build, expected_counts, fragments", BAD_INPUTS)
def test_bad_input_rejected(cifar_files, build, expected_counts, fragments):
    path = build(cifar_files)
    counts = {} if expected_counts == "default" else {"expected_counts": expected_counts}

    with pytest.raises(DataError) as caught:
        load_cifar10(path, **counts)

    message = str(caught.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_tiny_counts_accepted(cifar_files):
    data = load_cifar10(cifar_files.npz(), expected_counts=TINY_COUNTS)

    assert len(data.x_train) == TINY_TRAIN


def test_batch_label_shift_rejected(cifar_files):
    # Batch 1 has one label too many and batch 2 one too few, so the totals
    # match but every label after the first batch belongs to the wrong image.
    x_train = cifar_files.arrays["x_train"]
    first = pickle.dumps({b"data": to_rows(x_train[0:4]), b"labels": [0, 1, 2, 3, 4]}, protocol=2)
    second = pickle.dumps({b"data": to_rows(x_train[4:8]), b"labels": [5, 6, 7]}, protocol=2)
    path = cifar_files.folder(replace={"data_batch_1": first, "data_batch_2": second})

    with pytest.raises(DataError) as caught:
        load_cifar10(path, expected_counts=None)

    assert "data_batch_1" in str(caught.value)


class RunsShellCommand:
    """Pickles as a call to os.system, as a crafted batch file would."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("layout", ["folder", "tarball"])
def test_code_running_pickle_rejected(cifar_files, tmp_path, layout):
    marker = tmp_path / "MARKER"
    crafted = pickle.dumps(RunsShellCommand(f"touch {marker}"), protocol=2)
    write = cifar_files.folder if layout == "folder" else cifar_files.tarball

    path = write(replace={"data_batch_2": crafted})
    with pytest.raises(DataError) as caught:
        load_cifar10(path, expected_counts=None)

    message = str(caught.value)
    assert "data_batch_2" in message
    assert "could run code" in message
    assert not marker.exists()


@pytest.mark.real
def test_real_copy_loads(real_data_path):
    data = load_cifar10(real_data_path)

    assert data.sha256 == REAL_SHA256
    assert data.x_train.shape == (50_000, 32, 32, 3)
    assert data.x_test.shape == (10_000, 32, 32, 3)
    assert data.y_train.shape == (50_000,)
    assert data.y_train.dtype == np.uint8
    assert np.bincount(data.y_train, minlength=10).tolist() == [5000] * 10
    assert np.bincount(data.y_test, minlength=10).tolist() == [1000] * 10
