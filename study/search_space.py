"""Search spaces: TOML files that fix or tune every setting of a study.

A search space file has three tables:

    [training]          epochs per phase, batch size, optimizer, early stopping,
                        validation protocol and fraction
    [tuner]             oracle (random, bayesian, grid, hyperband) and budget
    [hyperparameters]   each entry either a fixed value or a table:
                        { type = "int",    min, max, step?, default }
                        { type = "float",  min, max, step? | sampling = "log", default }
                        { type = "choice", values = [...], default }

Hyperparameters left out of the file are fixed at `DEFAULTS`. Every key is
checked: an unknown key, a wrong type or an impossible range raises
`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from study.errors import ConfigError
from study.splits import PROTOCOLS

SEARCH_SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"

ORACLES = ("random", "bayesian", "grid", "hyperband")
OPTIMIZERS = ("adam", "sgd", "rmsprop")
PREPROCESSING_MODES = ("scale", "caffe")
BN_POLICIES = ("frozen", "trainable")
FINETUNE_DEPTHS = ("all", "conv3", "conv4", "conv5")

# Fixed values for hyperparameters a file leaves out: the original notebooks'
# head widths with a conventional head learning rate.
DEFAULTS: dict[str, Any] = {
    "units_1": 256,
    "units_2": 64,
    "learning_rate_head": 1e-3,
    "learning_rate_finetune": 1e-5,
    "dropout": 0.0,
    "l2": 0.0,
    "preprocessing": "caffe",
    "image_size": 32,
    "bn_policy": "frozen",
    "finetune_depth": "all",
}

# Per hyperparameter: the Python type of its values and a check of one value.
_VALUE_RULES = {
    "units_1": (int, lambda v: v >= 1, "a positive integer"),
    "units_2": (int, lambda v: v >= 1, "a positive integer"),
    "learning_rate_head": (float, lambda v: 0 < v < 1, "a float in (0, 1)"),
    "learning_rate_finetune": (float, lambda v: 0 < v < 1, "a float in (0, 1)"),
    "dropout": (float, lambda v: 0 <= v < 1, "a float in [0, 1)"),
    "l2": (float, lambda v: v >= 0, "a float >= 0"),
    "preprocessing": (str, lambda v: v in PREPROCESSING_MODES, f"one of {PREPROCESSING_MODES}"),
    "image_size": (int, lambda v: 32 <= v <= 512, "an integer from 32 to 512"),
    "bn_policy": (str, lambda v: v in BN_POLICIES, f"one of {BN_POLICIES}"),
    "finetune_depth": (str, lambda v: v in FINETUNE_DEPTHS, f"one of {FINETUNE_DEPTHS}"),
}


@dataclasses.dataclass(frozen=True)
class Training:
    """Fixed training settings of a search space."""

    epochs_head: int = 10
    epochs_finetune: int = 10
    batch_size: int = 64
    optimizer: str = "adam"
    early_stopping_patience: int = 0  # 0 disables early stopping
    validation_protocol: str = "holdout"
    validation_fraction: float = 0.1


@dataclasses.dataclass(frozen=True)
class TunerSettings:
    """The oracle and its budget."""

    oracle: str = "random"
    max_trials: int = 10
    hyperband_factor: int = 3


@dataclasses.dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter: fixed (`type == "fixed"`) or tuned."""

    name: str
    type: str
    default: Any
    min: float | None = None
    max: float | None = None
    step: float | None = None
    sampling: str = "linear"
    values: tuple = ()

    def declare(self, hp):
        """Register this hyperparameter on a `keras_tuner.HyperParameters`."""
        if self.type == "fixed":
            return hp.Fixed(self.name, self.default)
        if self.type == "choice":
            return hp.Choice(self.name, list(self.values), default=self.default)
        if self.type == "int":
            return hp.Int(
                self.name,
                int(self.min),
                int(self.max),
                step=None if self.step is None else int(self.step),
                sampling=self.sampling,
                default=self.default,
            )
        return hp.Float(
            self.name,
            self.min,
            self.max,
            step=self.step,
            sampling=self.sampling,
            default=self.default,
        )


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A parsed, validated search space."""

    name: str
    path: str
    description: str
    training: Training
    tuner: TunerSettings
    hyperparameters: tuple[Hyperparameter, ...]
    fingerprint: str  # sha256 of the effective settings, see with_fingerprint()

    def with_fingerprint(self) -> "SearchSpace":
        """Return a copy fingerprinted on its effective settings.

        `tuner.max_trials` is left out, so raising it extends a search instead
        of making it a different experiment.
        """
        content = self.to_dict()
        for key in ("path", "fingerprint"):
            content.pop(key)
        content["tuner"].pop("max_trials")
        digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode())
        return dataclasses.replace(self, fingerprint=digest.hexdigest())

    def declare(self, hp) -> dict[str, Any]:
        """Register every hyperparameter on `hp`; return the current values."""
        return {h.name: h.declare(hp) for h in self.hyperparameters}

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "path": self.path,
            "description": self.description,
            "training": dataclasses.asdict(self.training),
            "tuner": dataclasses.asdict(self.tuner),
            "hyperparameters": {
                h.name: {k: v for k, v in dataclasses.asdict(h).items() if k != "name"}
                for h in self.hyperparameters
            },
            "fingerprint": self.fingerprint,
        }


def available_search_spaces() -> list[str]:
    return sorted(p.stem for p in SEARCH_SPACES_DIR.glob("*.toml"))


def resolve_search_space_path(name_or_path: str) -> Path:
    """Find a search space by name in `search_spaces/` or by file path."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix == ".toml" or candidate.is_file():
        if not candidate.is_file():
            raise ConfigError(f"search space file not found: {candidate}")
        return candidate
    named = SEARCH_SPACES_DIR / f"{name_or_path}.toml"
    if not named.is_file():
        raise ConfigError(
            f"unknown search space {name_or_path!r}; choose one of "
            f"{', '.join(available_search_spaces()) or '(none found)'} "
            "or pass the path to a .toml file"
        )
    return named


def load_search_space(name_or_path: str) -> SearchSpace:
    """Read and validate a search space by name or path.

    Raises:
        ConfigError: the file is missing, is not valid TOML, or has an unknown
            key, a wrong type or an impossible range (named in the message).
    """
    path = resolve_search_space_path(name_or_path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"search space {path} is not valid TOML: {exc}") from exc
    return parse_search_space(raw, path)


def parse_search_space(raw: dict, path: Path) -> SearchSpace:
    _check_keys(raw, {"name", "description", "training", "tuner", "hyperparameters"}, path, "")
    training = _parse_section(raw.get("training", {}), Training, path, "training")
    tuner = _parse_section(raw.get("tuner", {}), TunerSettings, path, "tuner")
    _check_training(training, path)
    _check_tuner(tuner, path)

    entries = raw.get("hyperparameters", {})
    if not isinstance(entries, dict):
        raise ConfigError(f"{path}: [hyperparameters] must be a table")
    _check_keys(entries, set(DEFAULTS), path, "hyperparameters")
    hyperparameters = tuple(
        _parse_hyperparameter(name, entries.get(name, DEFAULTS[name]), path)
        for name in DEFAULTS
    )
    continuous = continuous_floats(hyperparameters)
    if tuner.oracle == "grid" and continuous:
        raise ConfigError(
            f"{path}: hyperparameters.{continuous[0]} is a continuous float, which "
            "the grid oracle cannot enumerate; give it a step or use choice"
        )
    name = raw.get("name", path.stem)
    if not isinstance(name, str):
        raise ConfigError(f"{path}: key 'name' must be a string")
    return SearchSpace(
        name=name,
        path=str(path),
        description=str(raw.get("description", "")),
        training=training,
        tuner=tuner,
        hyperparameters=hyperparameters,
        fingerprint="",
    ).with_fingerprint()


def continuous_floats(hyperparameters) -> list[str]:
    """Return the names of float hyperparameters without a step."""
    return [h.name for h in hyperparameters if h.type == "float" and h.step is None]


def _check_keys(table: dict, allowed: set, path: Path, section: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        where = f"{section}.{unknown[0]}" if section else unknown[0]
        raise ConfigError(
            f"{path}: unknown key '{where}'; allowed keys"
            f"{' in [' + section + ']' if section else ''}: {', '.join(sorted(allowed))}"
        )


def _parse_section(table, cls, path: Path, section: str):
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{section}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(table, set(fields), path, section)
    values = {}
    for key, value in table.items():
        expected = type(fields[key].default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not expected:
            raise ConfigError(
                f"{path}: {section}.{key} must be {expected.__name__}, got {value!r}"
            )
        values[key] = value
    return cls(**values)


def _check_training(training: Training, path: Path) -> None:
    checks = [
        ("epochs_head", training.epochs_head >= 0, "an integer >= 0"),
        ("epochs_finetune", training.epochs_finetune >= 1, "an integer >= 1"),
        ("batch_size", training.batch_size >= 1, "an integer >= 1"),
        ("optimizer", training.optimizer in OPTIMIZERS, f"one of {OPTIMIZERS}"),
        ("early_stopping_patience", training.early_stopping_patience >= 0, "an integer >= 0"),
        ("validation_protocol", training.validation_protocol in PROTOCOLS, f"one of {PROTOCOLS}"),
        ("validation_fraction", 0 < training.validation_fraction < 1, "a float in (0, 1)"),
    ]
    for key, ok, expected in checks:
        if not ok:
            raise ConfigError(
                f"{path}: training.{key} must be {expected}, got {getattr(training, key)!r}"
            )


def _check_tuner(tuner: TunerSettings, path: Path) -> None:
    if tuner.oracle not in ORACLES:
        raise ConfigError(f"{path}: tuner.oracle must be one of {ORACLES}, got {tuner.oracle!r}")
    if tuner.max_trials < 1:
        raise ConfigError(f"{path}: tuner.max_trials must be >= 1, got {tuner.max_trials}")
    if tuner.hyperband_factor < 2:
        raise ConfigError(
            f"{path}: tuner.hyperband_factor must be >= 2, got {tuner.hyperband_factor}"
        )


def _coerce(name: str, value: Any, path: Path, key: str) -> Any:
    """Check one value against its hyperparameter's type and range."""
    kind, is_valid, expected = _VALUE_RULES[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not kind or not is_valid(value):
        raise ConfigError(f"{path}: {key} must be {expected}, got {value!r}")
    return value


def _parse_hyperparameter(name: str, entry: Any, path: Path) -> Hyperparameter:
    key = f"hyperparameters.{name}"
    if not isinstance(entry, dict):
        return Hyperparameter(name, "fixed", _coerce(name, entry, path, key))

    kind = entry.get("type")
    allowed = {
        "choice": {"type", "values", "default"},
        "int": {"type", "min", "max", "step", "sampling", "default"},
        "float": {"type", "min", "max", "step", "sampling", "default"},
    }
    if kind not in allowed:
        raise ConfigError(
            f"{path}: {key}.type must be one of choice, int, float, got {kind!r}"
        )
    _check_keys(entry, allowed[kind], path, key)
    value_kind = _VALUE_RULES[name][0]

    if kind == "choice":
        values = entry.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: {key}.values must be a non-empty list")
        values = tuple(_coerce(name, v, path, f"{key}.values") for v in values)
        if len(set(values)) != len(values):
            raise ConfigError(f"{path}: {key}.values has duplicates: {list(values)}")
        default = _coerce(name, entry.get("default", values[0]), path, f"{key}.default")
        if default not in values:
            raise ConfigError(f"{path}: {key}.default {default!r} is not one of {list(values)}")
        return Hyperparameter(name, "choice", default, values=values)

    if (kind == "int") != (value_kind is int) or value_kind is str:
        raise ConfigError(
            f"{path}: {key}.type {kind!r} does not fit {name}, which must be "
            f"{_VALUE_RULES[name][2]}"
        )
    for bound in ("min", "max"):
        if bound not in entry:
            raise ConfigError(f"{path}: {key}.{bound} is missing")
    low = _coerce(name, entry["min"], path, f"{key}.min")
    high = _coerce(name, entry["max"], path, f"{key}.max")
    if low > high:
        raise ConfigError(f"{path}: {key} has min {low} > max {high}")
    sampling = entry.get("sampling", "linear")
    if sampling not in ("linear", "log"):
        raise ConfigError(f"{path}: {key}.sampling must be 'linear' or 'log', got {sampling!r}")
    if sampling == "log" and low <= 0:
        raise ConfigError(f"{path}: {key} uses log sampling, so min must be > 0, got {low}")
    step = entry.get("step")
    if step is not None:
        step = _coerce_step(step, kind, path, key)
        if sampling == "log" and kind == "float":
            raise ConfigError(f"{path}: {key} cannot combine a step with log sampling")
        if sampling == "log" and step <= 1:
            # Keras Tuner multiplies by the step under log sampling.
            raise ConfigError(
                f"{path}: {key} uses log sampling, so its step is a factor and must "
                f"be > 1, got {step}"
            )
    default = _coerce(name, entry.get("default", low), path, f"{key}.default")
    if not low <= default <= high or (kind == "float" and not math.isfinite(default)):
        raise ConfigError(f"{path}: {key}.default {default} is outside [{low}, {high}]")
    return Hyperparameter(
        name, kind, default, min=low, max=high, step=step, sampling=sampling
    )


def _coerce_step(step: Any, kind: str, path: Path, key: str):
    if kind == "int":
        valid = type(step) is int and step >= 1
    else:
        valid = isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0
    if not valid:
        raise ConfigError(f"{path}: {key}.step must be a positive {kind}, got {step!r}")
    return step if kind == "int" else float(step)
