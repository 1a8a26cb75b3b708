"""CIFAR-10: find it, read it without running untrusted code, and validate it.

Sources, in order:

1. an explicit path (`--data PATH` or the `STUDY_DATA` environment variable) to
   an `.npz` in the layout of `keras.datasets.cifar10.load_data()`, the official
   `cifar-10-python.tar.gz`, or its extracted `cifar-10-batches-py/` folder;
2. otherwise `keras.datasets.cifar10.load_data()`, which uses Keras' cache
   (`~/.keras/datasets`) and downloads when the file is missing.

The official batches are Python pickles. They are read with `SafeUnpickler`,
which admits only the few numpy and builtin callables those files contain, so a
crafted file cannot run code while it loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import pickle
import socket
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from study.errors import DataError

logger = logging.getLogger(__name__)

DATA_ENV = "STUDY_DATA"
CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SHAPE = (32, 32, 3)
EXPECTED_COUNTS = (50_000, 10_000)

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
BATCHES_DIR = "cifar-10-batches-py"

PASS_LOCAL_COPY = (
    f"pass a local copy with --data PATH or the {DATA_ENV} environment variable "
    "(an .npz with x_train, y_train, x_test, y_test; cifar-10-python.tar.gz; "
    f"or its extracted {BATCHES_DIR}/ folder)"
)

# The callables that the official CIFAR-10 pickles (and numpy arrays pickled by
# Python 3 at protocol 2) reference. Anything else is rejected.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }
)


@dataclasses.dataclass(frozen=True)
class Cifar10:
    """CIFAR-10 arrays plus where they came from.

    Attributes:
        x_train: (N, 32, 32, 3) uint8 training images.
        y_train: (N,) uint8 training labels, 0-9.
        x_test: (M, 32, 32, 3) uint8 test images.
        y_test: (M,) uint8 test labels, 0-9.
        source: the file or folder the arrays were read from.
        kind: `npz`, `tar.gz`, `batches` or `keras` (Keras' downloader and cache).
        sha256: hex digest of the source file; for a folder, of its batch files
            in a fixed order.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    kind: str
    sha256: str

    def describe(self) -> str:
        return (
            f"CIFAR-10 from {self.source} ({self.kind}, sha256 {self.sha256}): "
            f"{len(self.x_train)} train / {len(self.x_test)} test images"
        )


class ForbiddenGlobalError(pickle.UnpicklingError):
    """A pickle referenced a callable outside the CIFAR-10 allow-list."""


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals found in CIFAR-10 batch files."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise ForbiddenGlobalError(
                f"global '{module}.{name}' is not allowed in a CIFAR-10 batch"
            )
        return super().find_class(module, name)


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def load_cifar10(
    path: str | os.PathLike | None = None,
    expected_counts: tuple[int, int] | None = EXPECTED_COUNTS,
) -> Cifar10:
    """Load and validate CIFAR-10.

    Args:
        path: an `.npz`, `cifar-10-python.tar.gz` or `cifar-10-batches-py/`
            folder. When None, `STUDY_DATA` is used, and when that is unset too,
            Keras' own downloader and cache.
        expected_counts: required (train, test) image counts, or None to accept
            any count (for small synthetic copies in tests).

    Returns:
        The validated arrays, labels flattened to shape (N,).

    Raises:
        DataError: the file is missing, unreadable or fails validation, or no
            path was given and Keras could not download the data set.
    """
    if path is None:
        path = os.environ.get(DATA_ENV) or None
    if path is None:
        data = _load_with_keras()
    else:
        data = _load_path(Path(path).expanduser())
    _validate(data, expected_counts)
    logger.info("loaded %s", data.describe())
    return data


def _load_path(path: Path) -> Cifar10:
    if not path.exists():
        origin = f" (from ${DATA_ENV})" if os.environ.get(DATA_ENV) == str(path) else ""
        raise DataError(f"CIFAR-10 file not found: {path}{origin}; {PASS_LOCAL_COPY}")
    if path.is_dir():
        return _load_batches_dir(path)
    name = path.name.lower()
    if name.endswith(".npz"):
        return _load_npz(path)
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return _load_tarball(path)
    raise DataError(
        f"unsupported CIFAR-10 file {path}: expected a .npz, a .tar.gz or a "
        f"{BATCHES_DIR}/ folder; {PASS_LOCAL_COPY}"
    )


def _load_npz(path: Path) -> Cifar10:
    keys = ("x_train", "y_train", "x_test", "y_test")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise DataError(
            f"CIFAR-10 file {path} is not an .npz archive (no zip header); "
            f"{PASS_LOCAL_COPY}"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise DataError(
                    f"CIFAR-10 file {path} lacks the arrays {', '.join(missing)} "
                    f"(it has {', '.join(npz.files) or 'none'}); {PASS_LOCAL_COPY}"
                )
            arrays = {k: npz[k] for k in keys}
    except DataError:
        raise
    except ValueError as exc:
        # np.load raises ValueError for object arrays when allow_pickle=False.
        raise DataError(
            f"CIFAR-10 file {path} could not be read without pickle: {exc}"
        ) from exc
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(
            f"CIFAR-10 file {path} is truncated or corrupt ({exc}); {PASS_LOCAL_COPY}"
        ) from exc
    return Cifar10(
        **{k: arrays[k] for k in keys},
        source=str(path),
        kind="npz",
        sha256=sha256_file(path),
    )


def _unpickle_batch(raw: bytes, where: str) -> dict:
    try:
        batch = SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except ForbiddenGlobalError as exc:
        raise DataError(
            f"CIFAR-10 batch {where} was rejected because it could run code: {exc}"
        ) from exc
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
    ) as exc:
        raise DataError(
            f"CIFAR-10 batch {where} is truncated or corrupt ({exc!r}); "
            f"{PASS_LOCAL_COPY}"
        ) from exc
    if not isinstance(batch, dict):
        raise DataError(
            f"CIFAR-10 batch {where} contains a {type(batch).__name__}, expected a dict"
        )
    return batch


def _batch_arrays(batch: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Convert one official batch dict into (N, 32, 32, 3) images and labels."""
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DataError(
            f"CIFAR-10 batch {where} lacks the 'data' or 'labels' entry "
            f"(keys: {sorted(map(str, batch))})"
        )
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"CIFAR-10 batch {where} has data of shape {data.shape}, "
            "expected (N, 3072)"
        )
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(data):
        raise DataError(
            f"CIFAR-10 batch {where} has {labels.size} labels for {len(data)} images"
        )
    # The official layout is channel-first rows: R plane, G plane, B plane.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, labels


def _read_batches(read, where: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read the six batches through `read(name) -> bytes`, labelled for errors."""
    arrays = {}
    for name in TRAIN_BATCHES + (TEST_BATCH,):
        label = f"{where}:{name}"
        arrays[name] = _batch_arrays(_unpickle_batch(read(name), label), label)
    return arrays


def _assemble(arrays, source: Path, kind: str, sha256: str) -> Cifar10:
    x_train = np.concatenate([arrays[n][0] for n in TRAIN_BATCHES])
    y_train = np.concatenate([arrays[n][1] for n in TRAIN_BATCHES])
    x_test, y_test = arrays[TEST_BATCH]
    return Cifar10(
        x_train=np.ascontiguousarray(x_train),
        y_train=y_train,
        x_test=np.ascontiguousarray(x_test),
        y_test=y_test,
        source=str(source),
        kind=kind,
        sha256=sha256,
    )


def _load_batches_dir(path: Path) -> Cifar10:
    folder = path / BATCHES_DIR if (path / BATCHES_DIR).is_dir() else path
    digest = hashlib.sha256()

    def read(name: str) -> bytes:
        file = folder / name
        if not file.is_file():
            raise DataError(
                f"CIFAR-10 folder {folder} lacks the batch file {name}; "
                f"{PASS_LOCAL_COPY}"
            )
        raw = file.read_bytes()
        digest.update(raw)
        return raw

    arrays = _read_batches(read, str(folder))
    return _assemble(arrays, folder, "batches", digest.hexdigest())


def _load_tarball(path: Path) -> Cifar10:
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}

            def read(name: str) -> bytes:
                member = members.get(name)
                if member is None:
                    raise DataError(
                        f"CIFAR-10 archive {path} lacks the batch file {name}; "
                        f"{PASS_LOCAL_COPY}"
                    )
                return tar.extractfile(member).read()

            arrays = _read_batches(read, str(path))
    except DataError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"CIFAR-10 archive {path} is truncated or corrupt ({exc}); "
            f"{PASS_LOCAL_COPY}"
        ) from exc
    return _assemble(arrays, path, "tar.gz", sha256_file(path))


def _load_with_keras() -> Cifar10:
    import keras

    # Keras' downloader has no timeout; a firewall that drops packets would
    # otherwise hang here instead of failing.
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)
    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as exc:  # Keras raises bare Exception on fetch failures.
        raise DataError(
            "CIFAR-10 could not be downloaded by keras.datasets.cifar10.load_data() "
            f"({exc}); {PASS_LOCAL_COPY}"
        ) from exc
    finally:
        socket.setdefaulttimeout(previous_timeout)
    cache_dir = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    archive = cache_dir / "datasets" / "cifar-10-batches-py.tar.gz"
    sha256 = sha256_file(archive) if archive.is_file() else "unknown"
    return Cifar10(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        source=str(archive),
        kind="keras",
        sha256=sha256,
    )


def _validate(data: Cifar10, expected_counts: tuple[int, int] | None) -> None:
    """Check shapes, dtypes, label range and counts; flatten labels in place."""
    for split, expected in zip(("train", "test"), expected_counts or (None, None)):
        x = getattr(data, f"x_{split}")
        y = getattr(data, f"y_{split}")
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
            raise DataError(
                f"CIFAR-10 from {data.source}: x_{split} has shape {x.shape} and "
                f"dtype {x.dtype}, expected (N, 32, 32, 3) uint8"
            )
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(
                f"CIFAR-10 from {data.source}: y_{split} has dtype {y.dtype}, "
                "expected integer class labels"
            )
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.reshape(-1)
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(
                f"CIFAR-10 from {data.source}: y_{split} has shape {y.shape}, "
                f"expected ({len(x)},) to match x_{split}"
            )
        if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
            raise DataError(
                f"CIFAR-10 from {data.source}: y_{split} has labels from {y.min()} "
                f"to {y.max()}, expected 0 to {NUM_CLASSES - 1}"
            )
        if expected is not None and len(x) != expected:
            raise DataError(
                f"CIFAR-10 from {data.source}: {len(x)} {split} images, "
                f"expected {expected}; {PASS_LOCAL_COPY}"
            )
        # Cifar10 is frozen; normalise the label layout once, here.
        object.__setattr__(data, f"y_{split}", y.astype(np.uint8))
