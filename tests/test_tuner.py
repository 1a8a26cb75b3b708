"""The two-phase tuner on tiny data: trial records, checkpoints, resume and failures."""

import json
import math
from pathlib import Path

import keras_tuner
import pandas as pd
import pytest

from fixtures_study import tiny_cifar10, write_search_space
from study.errors import ConfigError, TrialFailuresError
from study.hypermodel import TransferHyperModel
from study.runner import _search
from study.records import EPOCH_METRICS, RECORD_FILE, TRIALS_CSV
from study.search_space import load_search_space
from study.splits import make_splits
from study.trial import CHECKPOINT_FILE, TrialRunner, trial_seed
from study.tuner import TwoPhaseTuner, make_oracle
from study.weights import resolve_weights

STUDY_SEED = 0
SIZE = 20


def make_tuner(
    space, results_dir, max_trials: int, overwrite: bool = False, kind: str = "random",
    max_consecutive_failures: int = 3,
) -> TwoPhaseTuner:
    """A tuner whose project is `<results_dir>/<space>/size_20`, as the runner lays it out."""
    oracle = make_oracle(
        kind, max_trials, STUDY_SEED, max_epochs=1,
        max_consecutive_failures=max_consecutive_failures,
    )
    return TwoPhaseTuner(
        TransferHyperModel(space, resolve_weights("none")),
        oracle,
        search_space=space,
        size=SIZE,
        study_seed=STUDY_SEED,
        provenance={"data_kind": "synthetic"},
        results_dir=results_dir,
        directory=str(results_dir / space.name),
        project_name=f"size_{SIZE}",
        overwrite=overwrite,
    )


@pytest.fixture(scope="module")
def splits():
    """10 training, 10 validation and 10 test images."""
    return make_splits(tiny_cifar10(), SIZE, STUDY_SEED, "holdout", 0.5)


@pytest.fixture(scope="module")
def search(tmp_path_factory, splits):
    """A finished two-trial random search, shared by the tests that inspect it."""
    root = tmp_path_factory.mktemp("tuner")
    space = load_search_space(str(write_search_space(root, name="tiny")))
    results_dir = root / "results"
    tuner = make_tuner(space, results_dir, max_trials=2, overwrite=True)
    tuner.search(splits=splits, verbose=0)
    return tuner, space, results_dir


def trial_dirs(tuner) -> list[Path]:
    return sorted(p for p in Path(tuner.project_dir).glob("trial_*") if p.is_dir())


def read_record(trial_dir) -> dict:
    return json.loads((trial_dir / RECORD_FILE).read_text())


@pytest.fixture(scope="module")
def records(search):
    tuner, _, _ = search
    return [read_record(d) for d in trial_dirs(tuner)]


def test_search_runs_two_trials(search):
    tuner, _, _ = search

    assert len(trial_dirs(tuner)) == 2
    assert tuner.remaining_trials == 0


def test_records_completed(records):
    assert len(records) == 2
    for record in records:
        assert record["status"] == "completed", record["reason"]
        assert record["reason"] is None


@pytest.mark.parametrize("phase", ["head", "finetune"])
def test_record_phase_history(records, phase):
    for record in records:
        history = record["phases"][phase]["history"]
        for metric in EPOCH_METRICS:
            assert len(history[metric]) == 1, (phase, metric)
            assert math.isfinite(history[metric][0]), (phase, metric)


@pytest.mark.parametrize("phase", ["head", "finetune"])
def test_record_test_accuracy(records, phase):
    for record in records:
        accuracy = record["phases"][phase]["test_accuracy"]
        assert 0.0 <= accuracy <= 1.0, phase


def test_record_sizes_and_protocol(records):
    for record in records:
        assert record["sizes"] == {"train": 10, "validation": 10, "test": 10}
        assert record["protocol"] == "holdout"
        assert record["size"] == SIZE
        assert record["search_space"] == "tiny"
        assert record["data_kind"] == "synthetic"


def test_record_hyperparameters(records):
    for record in records:
        assert record["hyperparameters"]["units_1"] in (8, 16)
        assert 1e-4 <= record["hyperparameters"]["learning_rate_head"] <= 1e-2
        assert record["hyperband"] == {}


def test_record_trial_seed(records):
    for record in records:
        assert record["seed"] == STUDY_SEED
        assert record["trial_seed"] == trial_seed(STUDY_SEED, record["trial_id"])


def test_oracle_objective_matches_record(search, records):
    tuner, _, _ = search

    for record in records:
        trial = tuner.oracle.get_trial(record["trial_id"])
        assert trial.status == keras_tuner.engine.trial.TrialStatus.COMPLETED
        best = trial.metrics.get_best_value("val_accuracy")
        assert best == pytest.approx(record["objective"])


def test_checkpoints_written(search):
    tuner, _, _ = search

    for trial_dir in trial_dirs(tuner):
        assert (trial_dir / CHECKPOINT_FILE).is_file(), trial_dir


def test_best_model_loads(search):
    tuner, _, _ = search

    (model,) = tuner.get_best_models(1)

    assert model.output_shape == (None, 10)


@pytest.mark.parametrize("phase", [1, 2])
def test_tensorboard_logs_written(search, records, phase):
    tuner, _, _ = search

    for record in records:
        trial_logs = Path(tuner.project_dir) / "tensorboard" / f"trial_{record['trial_id']}"
        log_dir = trial_logs / f"phase_{phase}"
        assert log_dir.is_dir(), log_dir
        assert any(p.is_file() for p in log_dir.rglob("*")), log_dir


def test_trials_table_written(search):
    _, _, results_dir = search

    trials = pd.read_csv(results_dir / TRIALS_CSV)

    assert len(trials) == 2
    assert set(trials["status"]) == {"completed"}


def test_resume_runs_no_trial(search, splits):
    tuner, space, results_dir = search
    before = {d.name: (d / RECORD_FILE).stat().st_mtime_ns for d in trial_dirs(tuner)}

    resumed = make_tuner(space, results_dir, max_trials=2, overwrite=False)
    remaining = resumed.remaining_trials
    resumed.search(splits=splits, verbose=0)

    after = {d.name: (d / RECORD_FILE).stat().st_mtime_ns for d in trial_dirs(resumed)}
    assert remaining == 0
    assert after == before


def test_trial_seed_deterministic():
    assert trial_seed(7, "00") == trial_seed(7, "00")


def test_trial_seed_differs_by_trial():
    assert trial_seed(7, "00") != trial_seed(7, "01")


def test_trial_seed_differs_by_study_seed():
    assert trial_seed(7, "00") != trial_seed(8, "00")


def test_trial_seed_in_int32_range():
    seeds = [trial_seed(seed, f"{trial:02d}") for seed in range(3) for trial in range(20)]

    assert all(0 <= seed < 2**31 - 1 for seed in seeds)


@pytest.mark.parametrize("kind", ["random", "bayesian"])
def test_non_finite_loss_fails_trial(tmp_path, splits, kind):
    # An L2 factor near float32's maximum makes the regularization loss
    # overflow to inf on the first batch, so the head phase cannot finish.
    space = load_search_space(
        str(write_search_space(tmp_path, name="diverges", hyperparameters={"l2": 1e38}))
    )
    tuner = make_tuner(space, tmp_path / "results", max_trials=1, overwrite=True, kind=kind)

    tuner.search(splits=splits, verbose=0)

    (trial_dir,) = trial_dirs(tuner)
    record = read_record(trial_dir)
    trial = tuner.oracle.get_trial(record["trial_id"])
    assert record["status"] == "failed"
    assert "loss became" in record["reason"]
    assert "phase 1" in record["reason"]
    assert "finetune" not in record["phases"]
    assert record["duration_s"] >= 0
    assert trial.status == keras_tuner.engine.trial.TrialStatus.FAILED
    assert not (trial_dir / CHECKPOINT_FILE).exists()


@pytest.mark.parametrize("kind", ["random", "bayesian", "grid", "hyperband"])
def test_study_seed_zero_fixes_oracle_seed(kind):
    # Keras Tuner swaps a seed of 0 for a random one; the study must not pass 0.
    seeds = {make_oracle(kind, 1, 0, max_epochs=2).seed for _ in range(3)}
    assert len(seeds) == 1
    assert seeds != {0}


def fail_first_trials(monkeypatch, count: int, error: Exception):
    """Make the first `count` trials raise `error` before training starts."""
    real = TrialRunner._run_phases
    calls = []

    def run_phases(self, *args, **kwargs):
        calls.append(1)
        if len(calls) <= count:
            raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TrialRunner, "_run_phases", run_phases)


@pytest.mark.parametrize("kind", ["random", "bayesian"])
def test_trial_error_search_continues(tmp_path, splits, monkeypatch, kind):
    fail_first_trials(monkeypatch, 1, MemoryError("simulated out of memory"))
    space = load_search_space(str(write_search_space(tmp_path, name="tiny")))
    results_dir = tmp_path / "results"
    tuner = make_tuner(space, results_dir, max_trials=2, overwrite=True, kind=kind)

    tuner.search(splits=splits, verbose=0)

    statuses = [read_record(d)["status"] for d in trial_dirs(tuner)]
    table = pd.read_csv(results_dir / TRIALS_CSV)
    failed = table[table["status"] == "failed"]
    assert statuses == ["failed", "completed"]
    assert len(failed) == 1
    assert "simulated out of memory" in failed["reason"].iloc[0]


def test_consecutive_failures_stop_search(tmp_path, splits, monkeypatch):
    fail_first_trials(monkeypatch, 10, RuntimeError("simulated crash"))
    space = load_search_space(str(write_search_space(tmp_path, name="tiny")))
    results_dir = tmp_path / "results"
    tuner = make_tuner(
        space, results_dir, max_trials=5, overwrite=True, max_consecutive_failures=2
    )

    with pytest.raises(TrialFailuresError) as caught:
        _search(tuner, splits, results_dir)

    table = pd.read_csv(results_dir / TRIALS_CSV)
    assert "2 failed trials in a row" in str(caught.value)
    assert "simulated crash" in str(caught.value)
    assert len(trial_dirs(tuner)) == 2
    assert list(table["status"]) == ["failed", "failed"]


def test_config_error_stops_at_once(tmp_path, splits, monkeypatch):
    fail_first_trials(monkeypatch, 10, ConfigError("invalid setting X; change it"))
    space = load_search_space(str(write_search_space(tmp_path, name="tiny")))
    tuner = make_tuner(space, tmp_path / "results", max_trials=5, overwrite=True)

    with pytest.raises(ConfigError, match="invalid setting X"):
        _search(tuner, splits, tmp_path / "results")

    assert len(trial_dirs(tuner)) == 1
