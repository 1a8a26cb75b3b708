"""Trials in child processes: results, exceptions, crashes, and the parent's death."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import child_targets
from fixtures_study import tiny_cifar10, write_search_space
from study.records import RECORD_FILE, TRIALS_CSV
from study.search_space import load_search_space
from study.splits import make_splits
from study.trial_process import TrialProcessError, run_in_child
from study.tuner import TwoPhaseTuner, make_oracle
from study.weights import resolve_weights

TESTS = Path(__file__).resolve().parent


def test_result_comes_back():
    assert run_in_child(child_targets.add, 2, 3) == 5


def test_exception_comes_back_with_child_traceback():
    with pytest.raises(ValueError, match="bad value") as caught:
        run_in_child(child_targets.raise_value_error, "bad value")
    assert any("In the trial process" in note for note in caught.value.__notes__)


def test_unpicklable_exception_is_named():
    with pytest.raises(TrialProcessError, match="Unpicklable: needs two"):
        run_in_child(child_targets.raise_unpicklable)


def test_killed_child_names_the_signal():
    with pytest.raises(TrialProcessError, match="SIGKILL.*out-of-memory") as caught:
        run_in_child(child_targets.kill_self)
    assert "before it reported a result" in caught.value.reason


def test_child_exit_without_result():
    with pytest.raises(TrialProcessError, match="exited with status 3"):
        run_in_child(child_targets.exit_quietly)


def alive(pid: int) -> bool:
    """True while `pid` runs; a zombie waiting for its reaper counts as ended."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.is_file():
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def test_child_dies_with_killed_parent(tmp_path):
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, str(TESTS / "parent_of_child.py"), str(pid_file)])
    try:
        deadline = time.monotonic() + 60
        while not pid_file.is_file() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the child never started"
            assert parent.poll() is None, "the parent ended early"
            time.sleep(0.2)
        child = int(pid_file.read_text())
        assert alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(child), "the trial process outlived the killed search process"
    finally:
        parent.kill()


def test_search_survives_a_killed_trial_process(tmp_path):
    """The first trial's process dies as if killed for memory; the search goes on."""
    space = load_search_space(str(write_search_space(tmp_path, name="tiny")))
    splits = make_splits(tiny_cifar10(), 20, 0, "holdout", 0.5)
    results_dir = tmp_path / "results"
    hypermodel = child_targets.SelfKillingHyperModel(
        tmp_path / "killed-once", space, resolve_weights("none")
    )
    tuner = TwoPhaseTuner(
        hypermodel,
        make_oracle("random", 2, 0, max_epochs=1),
        search_space=space, size=20, study_seed=0, results_dir=results_dir,
        directory=str(results_dir / space.name), project_name="size_20",
        trial_process="child",
    )
    tuner.search(splits=splits, verbose=0)

    records = {
        p.parent.name: json.loads(p.read_text())
        for p in (results_dir / space.name / "size_20").glob(f"trial_*/{RECORD_FILE}")
    }
    assert [r["status"] for _, r in sorted(records.items())] == ["failed", "completed"]
    failed, completed = (r for _, r in sorted(records.items()))
    assert "SIGKILL" in failed["reason"]
    assert "SIGKILL" in tuner.last_failure
    assert completed["process"] == "child"
    assert completed["peak_rss_mib"] > 0
    table = pd.read_csv(results_dir / TRIALS_CSV)
    assert sorted(table["status"]) == ["completed", "failed"]


def test_unknown_trial_process_is_refused(tmp_path):
    space = load_search_space(str(write_search_space(tmp_path, name="tiny")))
    with pytest.raises(ValueError, match="trial_process='thread'"):
        TwoPhaseTuner(
            child_targets.TransferHyperModel(space, resolve_weights("none")),
            make_oracle("random", 1, 0, max_epochs=1),
            search_space=space, size=20, study_seed=0,
            directory=str(tmp_path), project_name="p", trial_process="thread",
        )
