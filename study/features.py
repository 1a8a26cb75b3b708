"""A disk cache of frozen-backbone outputs, so trials skip the frozen part of ResNet50.

In phase 1 the backbone is frozen and its BatchNormalization layers run in
inference mode, so the pooled backbone output of an image never changes from
epoch to epoch, trial to trial or size to size. The cache computes it once for
the whole pool (50,000 training and 10,000 test images) and stores it under

    <cache>/features/<key>/{train.npy, test.npy, meta.json}

where the key is a digest of the data checksum, the weights checksum, the
preprocessing mode, the image size, the cut point, the stored dtype and the
format version. Every trial of every size
then indexes into the same arrays, read memory-mapped.

Phase 2 with `finetune_depth` conv3, conv4 or conv5 keeps the backbone below
that stage frozen, so the activations entering the stage (`CUT_BELOW_STAGE`)
are cached the same way and phase 2 trains only the upper stages and the head.

The cache is only valid when nothing random or trainable runs below the cut:
the backbone must come from a weights file (random initialisation differs per
trial), and no augmentation may run before it (the study has none yet). Each
entry is checked on first use (shapes, dtype and sha256 of both arrays) and
rebuilt when it does not match.

Entries store float16 by default: half the disk and memory of float32, and
the head's test accuracy on float16-rounded features stayed within seed noise
of float32 in `benchmarks/throughput.py` (its table is in
`benchmarks/README.md`). `FeatureCache(dtype="float32")` or
`python -m study.search --feature-dtype float32` keeps full precision, which
brings the cached path closest to the full model. Only the pooled features
were compared for accuracy; the float16 activations of phase 2 were not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from study.data import Cifar10, sha256_file
from study.errors import ConfigError
from study.precision import DEFAULT_FEATURE_DTYPE, FEATURE_DTYPES, global_dtype_policy
from study.records import write_atomic

logger = logging.getLogger("study.features")

CUT = "pool"  # the backbone output after global average pooling
# Phase 2 with `finetune_depth` conv3, conv4 or conv5 leaves every layer below
# that stage frozen, so the input of the stage can be cached as well.
CUT_BELOW_STAGE = {
    "conv3": "conv2_block3_out",
    "conv4": "conv3_block4_out",
    "conv5": "conv4_block6_out",
}
FORMAT_VERSION = 1
# Images per forward pass: large batches run the frozen backbone fastest.
EXTRACTION_BATCH_SIZE = 256
# Images per progress line and per write to the memory-mapped file.
EXTRACTION_CHUNK = 5000


def feature_key(
    data_sha256: str,
    weights_sha256: str,
    preprocessing: str,
    image_size: int,
    cut: str = CUT,
    dtype: str = DEFAULT_FEATURE_DTYPE,
) -> str:
    """Digest naming one cache entry; any change in the inputs gives a new entry."""
    fields = {
        "format": FORMAT_VERSION,
        "data_sha256": data_sha256,
        "weights_sha256": weights_sha256,
        "preprocessing": preprocessing,
        "image_size": int(image_size),
        "cut": cut,
        "dtype": np.dtype(dtype).name,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


@dataclasses.dataclass(frozen=True)
class Features:
    """Backbone outputs of the whole pool for one preprocessing, image size and cut.

    Attributes:
        key: the cache key.
        train: array for the training pool in pool order, e.g. of shape
            (50000, 2048) at the `pool` cut.
        test: array for the test set, e.g. of shape (10000, 2048).
    """

    key: str
    train: np.ndarray
    test: np.ndarray

    def rows_for_splits(self, splits) -> tuple:
        """Locate the train, validation and test rows of `splits` without reading them.

        Returns three `study.streaming.FeatureRows`, each naming an array of
        this entry and the row indices into it.
        """
        from study.streaming import FeatureRows

        subset = splits.subset
        train = FeatureRows(self.train, np.asarray(subset.train_indices))
        everything = FeatureRows(self.test, np.arange(len(self.test)))
        if splits.protocol == "test":
            validation = everything
        else:
            validation = FeatureRows(self.train, np.asarray(subset.validation_indices))
        return train, validation, everything

    def for_splits(self, splits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Feature arrays for the train, validation and test images of `splits`, in memory.

        The arrays keep the entry's dtype, and Keras casts float16 inputs to
        the model's float32 as it reads each batch.
        """
        return tuple(np.asarray(r.array[r.rows]) for r in self.rows_for_splits(splits))


class FeatureCache:
    """Computes, stores and loads backbone outputs: pooled features or stage activations.

    Args:
        data: the loaded data set (its sha256 is part of the key).
        hypermodel: a `study.hypermodel.TransferHyperModel`; its weights and
            backbone builder are used for the extraction.
        directory: where entries live; default `<study cache>/features`.
        dtype: `float16` (default) or `float32`, the precision of the stored
            arrays. Each dtype has entries of its own.

    Raises:
        ValueError: `dtype` is not one of `FEATURE_DTYPES`.
    """

    def __init__(
        self,
        data: Cifar10,
        hypermodel,
        directory: str | Path | None = None,
        dtype: str = DEFAULT_FEATURE_DTYPE,
    ):
        from study.weights import cache_dir

        if dtype not in FEATURE_DTYPES:
            raise ValueError(
                f"feature dtype {dtype!r} is not supported; use one of {', '.join(FEATURE_DTYPES)}"
            )
        self.dtype = dtype
        self.data = data
        self.hypermodel = hypermodel
        self.directory = Path(directory) if directory else cache_dir() / "features"
        self._loaded: dict[str, Features] = {}

    def __getstate__(self):
        # A trial process opens the entries itself; memory maps would be
        # pickled as full copies.
        return {**self.__dict__, "_loaded": {}}

    def unavailable_reason(self) -> str | None:
        """Return why the cache cannot serve this backbone, or None when it can."""
        weights = self.hypermodel.weights
        if weights.keras_weights is None or not weights.sha256:
            return "the backbone is randomly initialised per trial (--weights none)"
        return None

    def get(self, preprocessing: str, image_size: int, cut: str = CUT) -> Features:
        """Load the entry for these settings, computing it first when needed.

        Args:
            preprocessing: `scale` or `caffe`.
            image_size: the backbone's input size in pixels.
            cut: `pool` for the pooled backbone output, or the name of a
                backbone layer (see `CUT_BELOW_STAGE`) for its activations.

        Raises:
            ValueError: the cache cannot serve this backbone (see
                `unavailable_reason`).
            ConfigError: a computed value does not fit the cache's dtype.
        """
        reason = self.unavailable_reason()
        if reason:
            raise ValueError(f"the feature cache cannot be used: {reason}")
        key = feature_key(
            self.data.sha256, self.hypermodel.weights.sha256, preprocessing, image_size, cut,
            self.dtype,
        )
        if key in self._loaded:
            return self._loaded[key]
        entry = self.directory / key
        problem = _check_entry(
            entry, key, len(self.data.x_train), len(self.data.x_test), self.dtype
        )
        if problem is None:
            logger.info("features: using cache entry %s", entry)
        else:
            if problem != "absent":
                logger.warning(
                    "features: cache entry %s is unusable (%s); rebuilding it", entry, problem
                )
            self._build(entry, key, preprocessing, image_size, cut)
        features = Features(
            key=key,
            train=np.load(entry / "train.npy", mmap_mode="r"),
            test=np.load(entry / "test.npy", mmap_mode="r"),
        )
        self._loaded[key] = features
        return features

    def _build(
        self, entry: Path, key: str, preprocessing: str, image_size: int, cut: str
    ) -> None:
        from study.callbacks import format_duration
        from study.hypermodel import feature_extractor

        entry.mkdir(parents=True, exist_ok=True)
        # Entries are computed in float32 whatever the trials' dtype policy,
        # so one entry serves every policy.
        with global_dtype_policy("float32"):
            extractor = feature_extractor(
                self.hypermodel.make_backbone(image_size), preprocessing, image_size, cut
            )
        meta = {
            "format": FORMAT_VERSION,
            "key": key,
            "data_sha256": self.data.sha256,
            "weights_sha256": self.hypermodel.weights.sha256,
            "preprocessing": preprocessing,
            "image_size": int(image_size),
            "cut": cut,
            "dtype": self.dtype,
            "arrays": {},
        }
        started = time.monotonic()
        for name, images in (("train", self.data.x_train), ("test", self.data.x_test)):
            path = entry / f"{name}.npy"
            _extract(extractor, images, path, f"features {name}", self.dtype)
            meta["arrays"][name] = {
                "shape": list(np.load(path, mmap_mode="r").shape),
                "sha256": sha256_file(path),
            }
        meta["seconds"] = round(time.monotonic() - started, 1)
        write_atomic(entry / "meta.json", json.dumps(meta, indent=2) + "\n")
        logger.info(
            "features: computed %s in %s (%s)",
            entry, format_duration(meta["seconds"]), _describe_size(entry),
        )


def _extract(extractor, images: np.ndarray, path: Path, label: str, dtype: str) -> None:
    """Run `extractor` over `images` in chunks, writing a .npy file of `dtype` atomically."""
    from study.callbacks import format_duration  # imports Keras

    row_shape = tuple(int(d) for d in extractor.output.shape[1:])
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    out = np.lib.format.open_memmap(
        temporary, mode="w+", dtype=dtype, shape=(len(images), *row_shape)
    )
    started = time.monotonic()
    for start in range(0, len(images), EXTRACTION_CHUNK):
        stop = min(start + EXTRACTION_CHUNK, len(images))
        chunk = extractor.predict(
            images[start:stop], batch_size=EXTRACTION_BATCH_SIZE, verbose=0
        )
        largest = float(np.max(np.abs(chunk))) if chunk.size else 0.0
        if largest > float(np.finfo(dtype).max):
            del out
            temporary.unlink()
            raise ConfigError(
                f"{label}: values up to {largest:.3g} do not fit {dtype} "
                f"(largest {np.finfo(dtype).max:.0f}); pass --feature-dtype float32 "
                "(FeatureCache(dtype='float32') from Python)"
            )
        out[start:stop] = chunk
        elapsed = time.monotonic() - started
        rate = stop / elapsed if elapsed > 0 else float("inf")
        logger.info(
            "%s %d/%d images (%.0f img/s, ~%s left)",
            label, stop, len(images), rate, format_duration((len(images) - stop) / rate),
        )
    out.flush()
    del out
    os.replace(temporary, path)


def _check_entry(entry: Path, key: str, n_train: int, n_test: int, dtype: str) -> str | None:
    """Return None when the entry is complete and intact, else what is wrong with it."""
    meta_path = entry / "meta.json"
    if not meta_path.is_file():
        return "absent"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        return f"meta.json unreadable: {exc}"
    if meta.get("key") != key:
        return f"meta.json names key {meta.get('key')!r}"
    for name, rows in (("train", n_train), ("test", n_test)):
        path = entry / f"{name}.npy"
        expected = meta.get("arrays", {}).get(name, {})
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            return f"{name}.npy unreadable: {exc}"
        if array.shape[:1] != (rows,) or list(array.shape) != expected.get("shape"):
            return f"{name}.npy has shape {array.shape}, expected {expected.get('shape')}"
        if array.dtype != np.dtype(dtype):
            return f"{name}.npy has dtype {array.dtype}, expected {dtype}"
        del array
        if sha256_file(path) != expected.get("sha256"):
            return f"{name}.npy does not match its sha256"
    return None


def _describe_size(entry: Path) -> str:
    total = sum(p.stat().st_size for p in entry.glob("*.npy"))
    return f"{total / 2**20:.0f} MiB on disk"
