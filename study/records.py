"""Trial records and the tidy tables built from them.

Each trial writes `record.json` into its Keras Tuner trial directory
(`<results>/<search space>/size_<N>/trial_<id>/record.json`). The tidy tables
are always rebuilt from those files, so an interrupted run, a resumed run or
several workers writing into one results folder still give complete tables:

- `<results>/trials.csv`: one row per trial;
- `<results>/epochs.csv`: one row per epoch of each phase.

Every file is written to a temporary name and renamed into place, so a reader
never sees half a file.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path

import pandas as pd

from study.precision import DEFAULT_DTYPE_POLICY

logger = logging.getLogger(__name__)

RECORD_FILE = "record.json"
TRIALS_CSV = "trials.csv"
EPOCHS_CSV = "epochs.csv"
PHASES = {1: "head", 2: "finetune"}
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        # mkstemp creates the file private (0600); results are meant to be shared.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_safe(value):
    """Replace NaN and infinities, which strict JSON lacks, with None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_record(trial_dir: Path, record: dict) -> Path:
    path = Path(trial_dir) / RECORD_FILE
    write_atomic(path, json.dumps(_json_safe(record), indent=2, allow_nan=False) + "\n")
    return path


def read_records(results_dir: Path) -> list[dict]:
    """Read every trial record under `results_dir`, skipping unreadable ones."""
    records = []
    for path in sorted(Path(results_dir).glob(f"*/size_*/trial_*/{RECORD_FILE}")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            logger.warning("skipping unreadable trial record %s: %s", path, exc)
    return records


def _best(values: list, pick=max):
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return pick(finite) if finite else None


def _last(values: list):
    return values[-1] if values else None


def trial_row(record: dict) -> dict:
    """Flatten one record into a row of the trials table."""
    row = {
        "search_space": record.get("search_space"),
        "size": record.get("size"),
        "protocol": record.get("protocol"),
        "trial_id": record.get("trial_id"),
        "tuner_id": record.get("tuner_id"),
        "status": record.get("status"),
        "reason": record.get("reason"),
        "seed": record.get("seed"),
        "trial_seed": record.get("trial_seed"),
        "objective": record.get("objective"),
    }
    for name, value in record.get("hyperparameters", {}).items():
        row[f"hp_{name}"] = value
    for split, count in record.get("sizes", {}).items():
        row[f"{split}_size"] = count
    for phase in PHASES.values():
        result = record.get("phases", {}).get(phase, {})
        history = result.get("history", {})
        row[f"{phase}_epochs"] = len(history.get("loss", []))
        row[f"{phase}_best_val_accuracy"] = _best(history.get("val_accuracy", []))
        row[f"{phase}_best_val_loss"] = _best(history.get("val_loss", []), pick=min)
        row[f"{phase}_final_train_accuracy"] = _last(history.get("accuracy", []))
        row[f"{phase}_test_accuracy"] = result.get("test_accuracy")
        row[f"{phase}_test_loss"] = result.get("test_loss")
        row[f"{phase}_duration_s"] = result.get("duration_s")
    row["final_train_accuracy"] = row["finetune_final_train_accuracy"]
    row["head_path"] = record.get("phases", {}).get("head", {}).get("path")
    row["finetune_path"] = record.get("phases", {}).get("finetune", {}).get("path")
    for phase in ("head", "finetune"):
        result = record.get("phases", {}).get(phase, {})
        # Records from before float16 entries name no dtype: their cache was float32.
        default = "float32" if str(result.get("path", "")).startswith("cached") else None
        row[f"{phase}_feature_dtype"] = result.get("feature_dtype", default)
    predictions = record.get("predictions") or {}
    row["predictions_file"] = predictions.get("file")
    row["predictions_weights"] = predictions.get("weights")
    row["predictions_epoch"] = predictions.get("epoch")
    row["predictions_test_accuracy"] = predictions.get("test_accuracy")
    row["duration_s"] = record.get("duration_s")
    row["trial_process"] = record.get("process")
    row["dtype_policy"] = record.get("dtype_policy", DEFAULT_DTYPE_POLICY)
    row["peak_rss_mib"] = record.get("peak_rss_mib")
    row["started_at"] = record.get("started_at")
    for key in ("data_kind", "data_sha256", "weights_route", "weights_sha256"):
        row[key] = record.get(key)
    return row


def epoch_rows(record: dict) -> list[dict]:
    rows = []
    offset = 0
    for number, phase in PHASES.items():
        history = record.get("phases", {}).get(phase, {}).get("history", {})
        epochs = len(history.get("loss", []))
        for epoch in range(epochs):
            row = {
                "search_space": record.get("search_space"),
                "size": record.get("size"),
                "protocol": record.get("protocol"),
                "trial_id": record.get("trial_id"),
                "phase": number,
                "epoch": epoch + 1,
                "global_epoch": offset + epoch + 1,
            }
            for metric in EPOCH_METRICS:
                values = history.get(metric, [])
                row[metric] = values[epoch] if epoch < len(values) else None
            rows.append(row)
        offset += epochs
    return rows


def build_tables(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build the trials and epochs tables from every record under `results_dir`."""
    records = read_records(results_dir)
    trials = pd.DataFrame([trial_row(r) for r in records])
    epochs = pd.DataFrame([row for r in records for row in epoch_rows(r)])
    if not trials.empty:
        trials = trials.sort_values(["search_space", "size", "trial_id"], ignore_index=True)
    return trials, epochs


def write_tables(results_dir: Path) -> tuple[Path, Path]:
    """Rebuild `trials.csv` and `epochs.csv` in `results_dir`; return their paths."""
    results_dir = Path(results_dir)
    trials, epochs = build_tables(results_dir)
    trials_path = results_dir / TRIALS_CSV
    epochs_path = results_dir / EPOCHS_CSV
    write_atomic(trials_path, trials.to_csv(index=False))
    write_atomic(epochs_path, epochs.to_csv(index=False))
    return trials_path, epochs_path


def main(argv=None) -> int:
    """Rebuild the tidy tables: `python -m study.records [RESULTS_DIR]`."""
    from study import cli

    parser = cli.ArgumentParser(
        prog="python -m study.records",
        description="Rebuild trials.csv and epochs.csv from the trial records.",
    )
    parser.add_argument(
        "results_dir", nargs="?", default="results",
        help="results folder (default: results)",
    )
    args = parser.parse_args(argv)
    cli.setup_logging()
    results_dir = Path(args.results_dir)
    if not results_dir.is_dir():
        from study.errors import ConfigError

        raise ConfigError(f"results folder not found: {results_dir}")
    trials_path, epochs_path = write_tables(results_dir)
    logger.info("wrote %s and %s", trials_path, epochs_path)
    return 0


if __name__ == "__main__":
    from study.cli import run_main

    raise SystemExit(run_main(main))
