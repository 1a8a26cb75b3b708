"""Trial records and the tidy tables: atomic writes, strict JSON, one row per trial or epoch."""

import json
import logging
import math

import pandas as pd
import pytest

from study.records import (
    EPOCHS_CSV,
    RECORD_FILE,
    TRIALS_CSV,
    build_tables,
    write_atomic,
    write_record,
    write_tables,
)

TRIAL_COLUMNS = [
    "search_space",
    "size",
    "protocol",
    "trial_id",
    "status",
    "reason",
    "objective",
    "hp_units_1",
    "hp_learning_rate_head",
    "train_size",
    "validation_size",
    "test_size",
    "head_epochs",
    "head_best_val_accuracy",
    "head_test_accuracy",
    "finetune_epochs",
    "finetune_best_val_accuracy",
    "finetune_test_accuracy",
    "final_train_accuracy",
    "duration_s",
]
EPOCH_COLUMNS = [
    "search_space",
    "size",
    "protocol",
    "trial_id",
    "phase",
    "epoch",
    "global_epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
]


def history(epochs: int, start: float = 0.1) -> dict:
    return {
        "loss": [2.0 - 0.1 * i for i in range(epochs)],
        "accuracy": [start + 0.1 * i for i in range(epochs)],
        "val_loss": [2.1 - 0.1 * i for i in range(epochs)],
        "val_accuracy": [start + 0.05 * i for i in range(epochs)],
    }


def completed_record() -> dict:
    """A finished trial: 2 head epochs and 3 fine-tuning epochs."""
    return {
        "search_space": "tiny",
        "size": 20,
        "protocol": "holdout",
        "trial_id": "0",
        "status": "completed",
        "reason": None,
        "seed": 0,
        "trial_seed": 123,
        "objective": 0.4,
        "hyperparameters": {"units_1": 8, "learning_rate_head": 1e-3},
        "sizes": {"train": 10, "validation": 10, "test": 10},
        "phases": {
            "head": {"history": history(2), "test_accuracy": 0.2, "test_loss": 2.0},
            "finetune": {"history": history(3, 0.3), "test_accuracy": 0.35, "test_loss": 1.9},
        },
        "duration_s": 12.5,
    }


def failed_record() -> dict:
    """A trial whose loss diverged in its only head epoch."""
    return {
        "search_space": "tiny",
        "size": 20,
        "protocol": "holdout",
        "trial_id": "1",
        "status": "failed",
        "reason": "FailedTrialError: loss became nan in phase 1 epoch 1",
        "seed": 0,
        "trial_seed": 456,
        "hyperparameters": {"units_1": 16, "learning_rate_head": 0.5},
        "sizes": {"train": 10, "validation": 10, "test": 10},
        "phases": {
            "head": {
                "history": {
                    "loss": [float("nan")],
                    "accuracy": [0.1],
                    "val_loss": [float("nan")],
                    "val_accuracy": [0.1],
                },
            },
        },
        "duration_s": 3.0,
    }


def trial_dir(results_dir, trial_id: str):
    return results_dir / "tiny" / "size_20" / f"trial_{trial_id}"


@pytest.fixture
def results_dir(tmp_path):
    """A results folder with one completed and one failed trial."""
    for record in (completed_record(), failed_record()):
        write_record(trial_dir(tmp_path, record["trial_id"]), record)
    return tmp_path


def test_write_atomic_leaves_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "file.txt"

    write_atomic(path, "first")
    write_atomic(path, "second")

    assert path.read_text() == "second"
    assert [p.name for p in path.parent.iterdir()] == ["file.txt"]


def test_failed_write_keeps_old_file(tmp_path):
    path = tmp_path / "file.txt"
    write_atomic(path, "old")

    with pytest.raises(TypeError):
        write_atomic(path, 123)

    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_write_record_path(tmp_path):
    path = write_record(tmp_path / "trial_0", {"status": "running"})

    assert path == tmp_path / "trial_0" / RECORD_FILE
    assert [p.name for p in path.parent.iterdir()] == [RECORD_FILE]


def test_nan_becomes_null(tmp_path):
    record = {
        "objective": float("nan"),
        "phases": {"head": {"history": {"loss": [1.0, float("inf"), -float("inf")]}}},
        "pair": (float("nan"), 2),
    }

    path = write_record(tmp_path, record)

    text = path.read_text()
    loaded = json.loads(text)
    assert "NaN" not in text
    assert "Infinity" not in text
    assert loaded["objective"] is None
    assert loaded["phases"]["head"]["history"]["loss"] == [1.0, None, None]
    assert loaded["pair"] == [None, 2]


def test_record_caller_dict_unchanged(tmp_path):
    record = {"objective": float("nan")}

    write_record(tmp_path, record)

    assert math.isnan(record["objective"])


def test_trials_table_one_row_per_trial(results_dir):
    trials, _ = build_tables(results_dir)

    assert len(trials) == 2
    assert list(trials["trial_id"]) == ["0", "1"]
    assert list(trials["status"]) == ["completed", "failed"]


def test_trials_table_columns(results_dir):
    trials, _ = build_tables(results_dir)

    missing = [column for column in TRIAL_COLUMNS if column not in trials.columns]
    assert missing == []


def test_trials_table_completed_values(results_dir):
    trials, _ = build_tables(results_dir)
    row = trials.iloc[0]

    assert row["search_space"] == "tiny"
    assert row["size"] == 20
    assert row["protocol"] == "holdout"
    assert row["hp_units_1"] == 8
    assert row["train_size"] == 10
    assert row["head_epochs"] == 2
    assert row["finetune_epochs"] == 3
    assert row["head_best_val_accuracy"] == pytest.approx(0.15)
    assert row["finetune_best_val_accuracy"] == pytest.approx(0.4)
    assert row["finetune_test_accuracy"] == pytest.approx(0.35)
    assert row["final_train_accuracy"] == pytest.approx(0.5)
    assert row["duration_s"] == pytest.approx(12.5)
    assert pd.isna(row["reason"])


def test_trials_table_failed_values(results_dir):
    trials, _ = build_tables(results_dir)
    row = trials.iloc[1]

    assert row["status"] == "failed"
    assert "loss became nan" in row["reason"]
    assert row["head_epochs"] == 1
    assert row["finetune_epochs"] == 0
    assert pd.isna(row["finetune_test_accuracy"])
    assert pd.isna(row["final_train_accuracy"])
    assert pd.isna(row["objective"])
    # The NaN validation loss was stored as null and is skipped as a best value.
    assert pd.isna(row["head_best_val_loss"])


def test_epochs_table_columns(results_dir):
    _, epochs = build_tables(results_dir)

    assert list(epochs.columns) == EPOCH_COLUMNS


def test_epochs_table_counts(results_dir):
    _, epochs = build_tables(results_dir)
    counts = epochs.groupby(["trial_id", "phase"]).size().to_dict()

    # Trial 0 ran 2 head and 3 fine-tuning epochs, and trial 1 ran 1 head epoch.
    assert counts == {("0", 1): 2, ("0", 2): 3, ("1", 1): 1}


def test_epochs_table_numbering(results_dir):
    _, epochs = build_tables(results_dir)
    trial = epochs[epochs["trial_id"] == "0"]

    assert list(trial["phase"]) == [1, 1, 2, 2, 2]
    assert list(trial["epoch"]) == [1, 2, 1, 2, 3]
    assert list(trial["global_epoch"]) == [1, 2, 3, 4, 5]
    assert list(trial["accuracy"]) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


def test_epochs_table_matches_trials(results_dir):
    trials, epochs = build_tables(results_dir)

    expected = int((trials["head_epochs"] + trials["finetune_epochs"]).sum())
    assert len(epochs) == expected


def test_write_tables_readable(results_dir):
    trials_path, epochs_path = write_tables(results_dir)

    trials = pd.read_csv(trials_path)
    epochs = pd.read_csv(epochs_path)
    assert trials_path == results_dir / TRIALS_CSV
    assert epochs_path == results_dir / EPOCHS_CSV
    assert len(trials) == 2
    assert len(epochs) == 6
    assert trials.loc[0, "finetune_test_accuracy"] == pytest.approx(0.35)


def test_write_tables_leaves_no_temp_file(results_dir):
    write_tables(results_dir)

    names = sorted(p.name for p in results_dir.iterdir() if p.is_file())
    assert names == [EPOCHS_CSV, TRIALS_CSV]


def test_unreadable_record_skipped(results_dir, caplog):
    broken = trial_dir(results_dir, "2") / RECORD_FILE
    broken.parent.mkdir()
    broken.write_text('{"status": "comp')

    with caplog.at_level(logging.WARNING, logger="study.records"):
        trials, epochs = build_tables(results_dir)

    assert len(trials) == 2
    assert len(epochs) == 6
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(broken) in warnings[0]


def test_empty_results_give_empty_tables(tmp_path):
    trials, epochs = build_tables(tmp_path)

    assert trials.empty
    assert epochs.empty


def test_records_outside_layout_ignored(results_dir):
    stray = results_dir / "tiny" / "other" / "trial_9"
    write_record(stray, completed_record())

    trials, _ = build_tables(results_dir)

    assert len(trials) == 2


def test_records_cli_rebuilds_tables(results_dir):
    from study.records import main

    assert main([str(results_dir)]) == 0
    assert len(pd.read_csv(results_dir / "trials.csv")) == 2


def test_records_cli_missing_folder(tmp_path, capsys):
    from study.cli import run_main
    from study.records import main

    assert run_main(main, [str(tmp_path / "absent")]) == 2
    assert "results folder not found" in capsys.readouterr().err
