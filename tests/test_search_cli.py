"""`python -m study.search` end to end on a full-size synthetic CIFAR-10, and its input errors."""

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import pandas as pd
import pytest
from fixtures_study import full_size_npz, write_search_space  # noqa: F401 (fixture)

import study.splits
from study.cli import EXIT_USAGE, run_main
from study.records import EPOCHS_CSV, RECORD_FILE, TRIALS_CSV
from study.runner import CONFIG_FILE
from study.search import main

SIZES = (20, 40)
# Evaluating all 10,000 test images took about 35 s per phase on a shared
# 2-core CPU machine, so the end-to-end runs report on the first 20 only.
# Loading, subsets and trials are otherwise the real ones.
TEST_IMAGES = 20


@pytest.fixture(scope="module")
def small_test_set():
    real_make_splits = study.splits.make_splits

    def make_splits_small_test_set(*args, **kwargs):
        splits = real_make_splits(*args, **kwargs)
        return dataclasses.replace(
            splits, x_test=splits.x_test[:TEST_IMAGES], y_test=splits.y_test[:TEST_IMAGES]
        )

    with pytest.MonkeyPatch.context() as patch:
        # main() imports make_splits when it runs, so it picks up this one.
        patch.setattr(study.splits, "make_splits", make_splits_small_test_set)
        yield


@pytest.fixture(scope="module")
def study_run(tmp_path_factory, full_size_npz, small_test_set):  # noqa: F811
    """One finished run of two sizes, one trial each: argv, results folder, stdout, status."""
    root = tmp_path_factory.mktemp("search_cli")
    space = write_search_space(root, name="tiny")
    results_dir = root / "results"
    argv = [
        "--size", *map(str, SIZES),
        "--search-space", str(space),
        "--tuner", "random",
        "--max-trials", "1",
        "--weights", "none",
        "--data", str(full_size_npz),
        "--results-dir", str(results_dir),
    ]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(argv)
    return argv, results_dir, stdout.getvalue(), status


def project(results_dir: Path, size: int) -> Path:
    return results_dir / "tiny" / f"size_{size}"


def trial_records(results_dir: Path) -> list[Path]:
    return sorted(results_dir.glob(f"tiny/size_*/trial_*/{RECORD_FILE}"))


def test_run_returns_zero(study_run):
    _, _, _, status = study_run

    assert status == 0


@pytest.mark.parametrize("size", SIZES)
def test_project_config_written(study_run, size):
    _, results_dir, _, _ = study_run

    config = json.loads((project(results_dir, size) / CONFIG_FILE).read_text())

    assert config["size"] == size
    assert config["seed"] == 0
    assert config["protocol"] == "holdout"
    assert config["sizes_of_splits"]["train"] == size // 2
    assert config["sizes_of_splits"]["validation"] == size // 2
    assert config["search_space"]["tuner"]["max_trials"] == 1
    assert "none" in config["weights"]
    assert len(config["data_sha256"]) == 64
    assert config["feature_dtype"] == "float16"
    assert config["dtype_policy"] == "float32"


@pytest.mark.parametrize("size", SIZES)
def test_project_has_one_trial(study_run, size):
    _, results_dir, _, _ = study_run

    records = list(project(results_dir, size).glob(f"trial_*/{RECORD_FILE}"))

    assert len(records) == 1
    assert json.loads(records[0].read_text())["status"] == "completed"


def test_trials_csv_rows(study_run):
    _, results_dir, _, _ = study_run

    trials = pd.read_csv(results_dir / TRIALS_CSV)

    assert len(trials) == 2
    assert sorted(trials["size"]) == list(SIZES)
    assert set(trials["status"]) == {"completed"}
    assert set(trials["search_space"]) == {"tiny"}


def test_epochs_csv_rows(study_run):
    _, results_dir, _, _ = study_run

    epochs = pd.read_csv(results_dir / EPOCHS_CSV)

    assert len(epochs) == 4
    assert sorted(epochs.groupby("size")["phase"].apply(sorted).tolist()) == [[1, 2], [1, 2]]


def test_summary_printed(study_run):
    _, _, stdout, _ = study_run

    assert "val_accuracy" in stdout
    assert "finetune_test_accuracy" in stdout


def test_rerun_resumes(study_run):
    argv, results_dir, _, _ = study_run
    before = {p: p.stat().st_mtime_ns for p in trial_records(results_dir)}

    with contextlib.redirect_stdout(io.StringIO()):
        status = main(argv)

    after = {p: p.stat().st_mtime_ns for p in trial_records(results_dir)}
    assert status == 0
    assert after == before
    assert len(pd.read_csv(results_dir / TRIALS_CSV)) == 2


def test_other_seed_needs_overwrite(study_run, capsys):
    argv, results_dir, _, _ = study_run
    before = {p: p.stat().st_mtime_ns for p in trial_records(results_dir)}

    status = run_main(main, [*argv, "--seed", "1"])

    lines = capsys.readouterr().err.strip().splitlines()
    assert status == EXIT_USAGE
    assert len(lines) == 1
    assert "--overwrite" in lines[0]
    assert "seed" in lines[0]
    assert {p: p.stat().st_mtime_ns for p in trial_records(results_dir)} == before


def test_changed_epochs_need_overwrite(study_run, capsys):
    # --epochs-head changes how every later trial trains, so resuming the
    # project with it would mix two experiments in one search.
    argv, results_dir, _, _ = study_run
    before = {p: p.stat().st_mtime_ns for p in trial_records(results_dir)}

    status = run_main(main, [*argv, "--epochs-head", "2"])

    lines = capsys.readouterr().err.strip().splitlines()
    assert status == EXIT_USAGE
    assert len(lines) == 1
    assert "--overwrite" in lines[0]
    assert {p: p.stat().st_mtime_ns for p in trial_records(results_dir)} == before


IN_PROCESS_USAGE_ERRORS = {
    "max_trials_zero": ["--size", "20", "--max-trials", "0"],
    "epochs_finetune_zero": ["--size", "20", "--epochs-finetune", "0"],
    "negative_epochs_head": ["--size", "20", "--epochs-head", "-1"],
    "missing_size": ["--search-space", "default"],
    "feature_dtype_unknown": ["--size", "20", "--feature-dtype", "float64"],
    "dtype_policy_unknown": ["--size", "20", "--dtype-policy", "float64"],
}


@pytest.mark.parametrize(
    "args", IN_PROCESS_USAGE_ERRORS.values(), ids=IN_PROCESS_USAGE_ERRORS.keys()
)
def test_usage_error_exits_2(args, capsys):
    with pytest.raises(SystemExit) as caught:
        run_main(main, args)

    lines = capsys.readouterr().err.strip().splitlines()
    assert caught.value.code == EXIT_USAGE
    assert len(lines) == 1
    assert lines[0].startswith("python -m study.search: error:")


def test_grid_rejects_continuous_space(capsys):
    status = run_main(main, ["--size", "20", "--search-space", "default", "--tuner", "grid"])

    lines = capsys.readouterr().err.strip().splitlines()
    assert status == EXIT_USAGE
    assert len(lines) == 1
    assert "--tuner grid" in lines[0]
    assert "learning_rate_head" in lines[0]


def test_results_dir_not_writable(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")

    status = run_main(main, ["--size", "20", "--results-dir", str(blocker / "results")])

    lines = capsys.readouterr().err.strip().splitlines()
    assert status == EXIT_USAGE
    assert len(lines) == 1
    assert "--results-dir" in lines[0]
    assert str(blocker / "results") in lines[0]


def test_missing_data_file(tmp_path, capsys):
    path = tmp_path / "absent.npz"

    status = run_main(
        main,
        ["--size", "1000", "--data", str(path), "--results-dir", str(tmp_path / "results")],
    )

    lines = capsys.readouterr().err.strip().splitlines()
    assert status == EXIT_USAGE
    assert len(lines) == 1
    assert str(path) in lines[0]
    assert "not found" in lines[0]


def test_dtype_policy_change_needs_overwrite(tmp_path):
    from study.errors import ConfigError
    from study.runner import check_project

    (tmp_path / CONFIG_FILE).write_text(json.dumps({"size": 20, "dtype_policy": "float32"}))

    with pytest.raises(ConfigError, match="different --dtype-policy"):
        check_project(tmp_path, {"size": 20, "dtype_policy": "mixed_float16"}, overwrite=False)
    check_project(tmp_path, {"size": 20, "dtype_policy": "mixed_float16"}, overwrite=True)


def test_project_without_dtype_policy_resumes(tmp_path):
    from study.runner import check_project

    # Projects written before the option existed ran in float32.
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"size": 20}))

    check_project(tmp_path, {"size": 20, "dtype_policy": "float32"}, overwrite=False)
