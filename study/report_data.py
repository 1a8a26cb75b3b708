"""Load what the report needs from a results folder.

The tidy tables are read from `trials.csv` and `epochs.csv`. When either is
missing, older than a trial record, or lacks a column that `study.records`
writes today, both are rebuilt from the records first. Each project's
`study_config.json`, the run log `runs.jsonl` and the best trials'
`predictions.npz` files are read as they are.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from study.data import IMAGE_SHAPE, NUM_CLASSES
from study.errors import ConfigError
from study.records import (
    EPOCH_METRICS,
    EPOCHS_CSV,
    RECORD_FILE,
    TRIALS_CSV,
    build_tables,
    trial_row,
    write_tables,
)

logger = logging.getLogger(__name__)

CONFIG_FILE = "study_config.json"
RUNS_FILE = "runs.jsonl"
# `study.trial` writes predictions under this name. Importing its constant would load Keras.
PREDICTIONS_FILE = "predictions.npz"
EPOCH_COLUMNS = [
    "search_space", "size", "protocol", "trial_id", "phase", "epoch", "global_epoch",
    *EPOCH_METRICS,
]


@dataclasses.dataclass
class Results:
    """The tidy tables, project configurations and runs of one results folder."""

    directory: Path
    trials: pd.DataFrame
    epochs: pd.DataFrame
    # Parsed study_config.json per (search space, size).
    configs: dict[tuple[str, int], dict]
    # Lines of runs.jsonl, or None when the file is missing.
    runs: list[dict] | None

    @property
    def spaces(self) -> list[str]:
        """Search spaces with trials or a project folder, sorted by name."""
        names = set(self.trials["search_space"]) | {space for space, _ in self.configs}
        return sorted(names)

    @property
    def projects(self) -> list[tuple[str, int]]:
        """(search space, size) of every project with trials or a configuration."""
        keys = {
            (space, int(size))
            for space, size in zip(self.trials["search_space"], self.trials["size"])
        }
        return sorted(keys | set(self.configs))

    def trial_dir(self, space: str, size: int, trial_id: str) -> Path:
        return self.directory / space / f"size_{size}" / f"trial_{trial_id}"


def best_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Return the completed trial with the highest objective per search space and size.

    Ties go to the smallest trial id. A size without a completed trial has no row.
    """
    done = trials[(trials["status"] == "completed") & trials["objective"].notna()]
    done = done.sort_values(
        ["search_space", "size", "objective", "trial_id"],
        ascending=[True, True, False, True],
    )
    return done.drop_duplicates(["search_space", "size"]).reset_index(drop=True)


def _stale_reason(results_dir: Path, records: list[Path]) -> str | None:
    """Say why the tidy tables must be rebuilt, or return None when they are current."""
    tables = [results_dir / TRIALS_CSV, results_dir / EPOCHS_CSV]
    for table in tables:
        if not table.is_file():
            return f"{table.name} is missing"
    newest = max(path.stat().st_mtime_ns for path in records)
    # Equal times count as stale: on a coarse clock a record written right
    # after the tables can share their modification time.
    if newest >= min(table.stat().st_mtime_ns for table in tables):
        return "a trial record is newer than the tables"
    with open(tables[0]) as f:
        header = f.readline().strip().split(",")
    missing = [column for column in trial_row({}) if column not in header]
    if missing:
        return f"{TRIALS_CSV} lacks the columns {', '.join(missing)}"
    return None


def _read_csv(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype={"trial_id": str})
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=columns)


def load_tables(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the trials and epochs tables, rebuilding them when they are stale.

    Raises:
        ConfigError: `results_dir` is missing or contains no readable trial record.
    """
    if not results_dir.is_dir():
        raise ConfigError(
            f"results folder not found: {results_dir}; pass --results-dir, or run "
            "python -m study.search first"
        )
    records = sorted(results_dir.glob(f"*/size_*/trial_*/{RECORD_FILE}"))
    if not records:
        raise ConfigError(
            f"no trial records under {results_dir}/ (expected "
            f"SEARCH_SPACE/size_N/trial_ID/{RECORD_FILE}); run python -m study.search first"
        )

    reason = _stale_reason(results_dir, records)
    if reason is None:
        trials = _read_csv(results_dir / TRIALS_CSV)
        epochs = _read_csv(results_dir / EPOCHS_CSV, EPOCH_COLUMNS)
    else:
        try:
            trials_path, epochs_path = write_tables(results_dir)
        except OSError as exc:
            logger.warning(
                "tables in %s are stale (%s) and cannot be rewritten (%s); "
                "using tables built in memory", results_dir, reason, exc,
            )
            trials, epochs = build_tables(results_dir)
        else:
            logger.info("rebuilt %s and %s because %s", trials_path, epochs_path, reason)
            trials = _read_csv(trials_path)
            epochs = _read_csv(epochs_path, EPOCH_COLUMNS)

    if trials.empty:
        raise ConfigError(
            f"no readable trial records under {results_dir}/; the {len(records)} "
            f"{RECORD_FILE} files found are invalid JSON, see the warnings above"
        )
    if epochs.empty:
        epochs = pd.DataFrame(columns=EPOCH_COLUMNS)
    trials["size"] = trials["size"].astype(int)
    trials["trial_id"] = trials["trial_id"].astype(str)
    epochs["trial_id"] = epochs["trial_id"].astype(str)
    return trials, epochs


def _project_key(path: Path) -> tuple[str, int] | None:
    """(search space, size) from a `<space>/size_<N>/` folder, or None for another name."""
    folder = path.parent
    number = folder.name.removeprefix("size_")
    if not number.isdigit():
        return None
    return folder.parent.name, int(number)


def load_configs(results_dir: Path) -> dict[tuple[str, int], dict]:
    """Read every project's study_config.json, skipping unreadable files with a warning."""
    configs = {}
    for path in sorted(results_dir.glob(f"*/size_*/{CONFIG_FILE}")):
        key = _project_key(path)
        if key is None:
            continue
        try:
            configs[key] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            logger.warning("skipping unreadable project configuration %s: %s", path, exc)
    return configs


def load_runs(results_dir: Path) -> list[dict] | None:
    """Read runs.jsonl, skipping invalid lines with a warning; None when the file is missing."""
    path = results_dir / RUNS_FILE
    if not path.is_file():
        return None
    runs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            run = json.loads(line)
        except ValueError as exc:
            logger.warning("skipping invalid line %d of %s: %s", number, path, exc)
            continue
        if isinstance(run, dict):
            runs.append(run)
        else:
            logger.warning("skipping line %d of %s: not a JSON object", number, path)
    return runs


def load_results(results_dir: Path) -> Results:
    """Load the tables, configurations and runs of `results_dir`.

    Raises:
        ConfigError: `results_dir` is missing or contains no readable trial record.
    """
    results_dir = Path(results_dir)
    trials, epochs = load_tables(results_dir)
    return Results(
        directory=results_dir,
        trials=trials,
        epochs=epochs,
        configs=load_configs(results_dir),
        runs=load_runs(results_dir),
    )


@dataclasses.dataclass(frozen=True)
class Predictions:
    """Test-set predictions of one trial, as stored in predictions.npz."""

    # float, shape (n_test, NUM_CLASSES)
    probabilities: np.ndarray
    # true class per test image, shape (n_test,)
    labels: np.ndarray
    # some test images, uint8, shape (k, 32, 32, 3) with k <= n_test
    examples: np.ndarray
    # test-set index of each example; files without `example_indices` stored
    # the first k test images
    example_indices: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.predicted == self.labels))


def read_predictions(path: Path) -> Predictions:
    """Read and validate a predictions.npz file.

    Raises:
        ValueError: the file is not a valid .npz or its arrays have the wrong shape.
        OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise ValueError("not a .npz file (no zip header)")
    try:
        with np.load(path, allow_pickle=False) as data:
            probabilities = data["probabilities"].astype(np.float32)
            labels = data["labels"].astype(np.int64)
            examples = data["examples"]
            if "example_indices" in data.files:
                indices = data["example_indices"].astype(np.int64)
            else:
                indices = np.arange(len(examples))
    except KeyError as exc:
        raise ValueError(f"array {exc} is missing") from None
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"not a valid .npz file: {exc}") from None

    count = len(labels)
    if probabilities.shape != (count, NUM_CLASSES) or labels.ndim != 1:
        raise ValueError(
            f"probabilities have shape {probabilities.shape} and labels {labels.shape}, "
            f"expected (n, {NUM_CLASSES}) and (n,)"
        )
    if count == 0:
        raise ValueError("the file contains no predictions")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"labels range from {labels.min()} to {labels.max()}")
    if examples.ndim != 4 or examples.shape[1:] != IMAGE_SHAPE or len(examples) > count:
        raise ValueError(
            f"examples have shape {examples.shape}, expected (k, 32, 32, 3) with k <= {count}"
        )
    if indices.shape != (len(examples),) or (
        len(indices) and (indices.min() < 0 or indices.max() >= count)
    ):
        raise ValueError(
            f"example_indices have shape {indices.shape} or values outside 0..{count - 1}"
        )
    return Predictions(probabilities, labels, examples.astype(np.uint8), indices)
