"""Kill `python -m study.search` at several points, rerun it, and check the trial set.

One project is interrupted five times in a row (SIGKILL, SIGTERM and SIGINT at
different points of two trials) and then run to the end. Each run is a real
subprocess of the command, with the test set cut to 20 images.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fixtures_study import full_size_npz, write_search_space  # noqa: F401 (fixture)
from study.records import RECORD_FILE, TRIALS_CSV
from study.trial import RESUME_DIR

DRIVER = Path(__file__).resolve().parent / "search_driver.py"
TIMEOUT_S = 300

# (name, log fragment that triggers the signal, signal)
KILL_POINTS = [
    ("phase_1", "trial 1/2 size=20 phase=1 epoch 2/3", signal.SIGKILL),
    ("phase_2", "trial 1/2 size=20 phase=2 epoch 2/3", signal.SIGKILL),
    ("trial_end", "trial 1/2 size=20 done", signal.SIGTERM),
    ("second_trial_start", "trial 2/2 size=20 start", signal.SIGKILL),
    ("evaluation", "trial 2/2 size=20 phase=2 epoch 3/3", signal.SIGINT),
]


def run_until(argv: list[str], fragment: str, sig: int) -> tuple[int, str]:
    """Start the command, send `sig` when `fragment` is logged, return (status, log)."""
    process = subprocess.Popen(
        [sys.executable, str(DRIVER), *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    lines = []
    for line in process.stderr:
        lines.append(line)
        if fragment in line:
            process.send_signal(sig)
            break
    try:
        _, rest = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, "".join(lines) + rest


@pytest.fixture(scope="module")
def interrupted_study(tmp_path_factory, full_size_npz):  # noqa: F811
    """Logs of every interrupted run and of the final run, plus the results folder."""
    root = tmp_path_factory.mktemp("resume")
    space = write_search_space(
        root,
        name="tiny",
        training={"epochs_head": 3, "epochs_finetune": 3},
        tuner={"oracle": "random", "max_trials": 2},
    )
    results_dir = root / "results"
    argv = [
        "--size", "20",
        "--search-space", str(space),
        "--weights", "none",
        "--data", str(full_size_npz),
        "--results-dir", str(results_dir),
    ]
    runs = {}
    for name, fragment, sig in KILL_POINTS:
        runs[name] = run_until(argv, fragment, sig)
    final = subprocess.run(
        [sys.executable, str(DRIVER), *argv],
        capture_output=True, text=True, timeout=TIMEOUT_S,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    runs["final"] = (final.returncode, final.stderr)
    return runs, results_dir


def records(results_dir: Path) -> list[dict]:
    paths = sorted(results_dir.glob(f"tiny/size_20/trial_*/{RECORD_FILE}"))
    return [json.loads(p.read_text()) for p in paths]


@pytest.mark.parametrize("name", ["phase_1", "phase_2", "second_trial_start"])
def test_sigkill_status(interrupted_study, name):
    runs, _ = interrupted_study
    assert runs[name][0] == -signal.SIGKILL


@pytest.mark.parametrize("name", ["trial_end", "evaluation"])
def test_clean_stop_exits_130(interrupted_study, name):
    runs, _ = interrupted_study
    status, log = runs[name]
    assert status == 130, log[-2000:]
    assert "rerun the same command to resume" in log


def test_final_run_succeeds(interrupted_study):
    runs, _ = interrupted_study
    status, log = runs["final"]
    assert status == 0, log[-2000:]


def test_phase_1_resumes_mid_phase(interrupted_study):
    runs, _ = interrupted_study
    assert "phase=1 resumes after epoch" in runs["phase_2"][1]


def test_phase_2_resumes_mid_phase(interrupted_study):
    runs, _ = interrupted_study
    log = runs["trial_end"][1]
    assert "phase=1 restored" in log
    assert "phase=2 resumes after epoch" in log


def test_each_trial_once(interrupted_study):
    _, results_dir = interrupted_study
    assert sorted(r["trial_id"] for r in records(results_dir)) == ["0", "1"]


def test_all_trials_completed(interrupted_study):
    _, results_dir = interrupted_study
    assert [r["status"] for r in records(results_dir)] == ["completed", "completed"]


def test_histories_complete(interrupted_study):
    _, results_dir = interrupted_study
    for record in records(results_dir):
        assert len(record["phases"]["head"]["history"]["loss"]) == 3
        assert len(record["phases"]["finetune"]["history"]["loss"]) == 3


def test_first_trial_recorded_resumes(interrupted_study):
    _, results_dir = interrupted_study
    first = records(results_dir)[0]
    assert first["phases"]["finetune"]["resumed_after_epochs"] >= 1


def test_table_matches_records(interrupted_study):
    _, results_dir = interrupted_study
    table = pd.read_csv(results_dir / TRIALS_CSV, dtype={"trial_id": str})
    assert sorted(table["trial_id"]) == ["0", "1"]
    assert set(table["status"]) == {"completed"}


def test_resume_state_removed(interrupted_study):
    _, results_dir = interrupted_study
    assert not list(results_dir.glob(f"tiny/size_20/trial_*/{RESUME_DIR}"))


def test_resumed_time_counted(interrupted_study):
    _, results_dir = interrupted_study
    first = records(results_dir)[0]
    finetune = first["phases"]["finetune"]
    assert finetune["restored_s"] > 0
    assert finetune["duration_s"] >= finetune["restored_s"]
    assert first["duration_s"] >= first["phases"]["head"]["duration_s"] + finetune["duration_s"]


def test_truncated_backup_restarts_phase(tmp_path, caplog):
    import keras
    import numpy as np

    from study.callbacks import EpochHistoryFile, PhaseBackup

    x = np.random.default_rng(0).random((8, 3)).astype("float32")
    y = np.arange(8) % 2
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    backup = tmp_path / "backup"
    model.fit(x, y, epochs=1, verbose=0, callbacks=[PhaseBackup(str(backup))])
    weights = backup / "latest.weights.h5"
    weights.write_bytes(weights.read_bytes()[:96])

    history = EpochHistoryFile(tmp_path / "history.json", 0)
    with caplog.at_level("WARNING", logger="study.progress"):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[history, PhaseBackup(str(backup))])

    assert "unreadable" in caplog.text
    assert len(history.history["loss"]) == 2
