"""Keras Tuner's chief/worker mode on loopback: one chief, two workers, one killed and restarted."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from fixtures_study import full_size_npz, write_search_space  # noqa: F401 (fixture)
from study import distributed
from study.errors import ConfigError
from study.records import RECORD_FILE, TRIALS_CSV

DRIVER = Path(__file__).resolve().parent / "search_driver.py"
MAX_TRIALS = 4
TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(argv: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for name in (distributed.TUNER_ID, distributed.ORACLE_IP, distributed.ORACLE_PORT):
        env.pop(name, None)
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, str(DRIVER), *argv], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def wait_for_line(log: Path, fragment: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if log.exists() and fragment in log.read_text():
            return
        if process.poll() is not None:
            raise AssertionError(f"process ended before logging {fragment!r}:\n{log.read_text()}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {fragment!r}")


@pytest.fixture(scope="module")
def distributed_study(tmp_path_factory, full_size_npz):  # noqa: F811
    """Run the study; return the results folder, exit statuses and logs."""
    root = tmp_path_factory.mktemp("distributed")
    space = write_search_space(
        root, name="tiny",
        training={"epochs_head": 2, "epochs_finetune": 2},
        tuner={"oracle": "random", "max_trials": MAX_TRIALS},
    )
    results_dir = root / "results"
    common = [
        "--size", "20", "--search-space", str(space), "--weights", "none",
        "--data", str(full_size_npz), "--results-dir", str(results_dir),
    ]
    address = f"127.0.0.1:{free_port()}"
    logs = {name: root / f"{name}.log" for name in ("chief", "a", "b", "a_again")}

    chief = start([*common, "--chief", address], logs["chief"])
    wait_for_line(logs["chief"], "serving the oracle", chief)
    worker_a = start([*common, "--chief", address, "--worker", "a"], logs["a"])
    worker_b = start([*common, "--chief", address, "--worker", "b"], logs["b"])

    # Kill worker a in the middle of its first trial, then restart it.
    wait_for_line(logs["a"], "phase=1 epoch 1/2", worker_a)
    worker_a.send_signal(signal.SIGKILL)
    killed_status = worker_a.wait(timeout=60)
    worker_a_again = start([*common, "--chief", address, "--worker", "a"], logs["a_again"])

    statuses = {
        "a": killed_status,
        "a_again": worker_a_again.wait(timeout=TIMEOUT_S),
        "b": worker_b.wait(timeout=TIMEOUT_S),
        "chief": chief.wait(timeout=TIMEOUT_S),
    }
    texts = {name: path.read_text() for name, path in logs.items()}
    return results_dir, statuses, texts


def records(results_dir: Path) -> list[dict]:
    paths = sorted(results_dir.glob(f"tiny/size_20/trial_*/{RECORD_FILE}"))
    return [json.loads(p.read_text()) for p in paths]


@pytest.mark.parametrize("name", ["chief", "a_again", "b"])
def test_processes_exit_zero(distributed_study, name):
    _, statuses, texts = distributed_study
    assert statuses[name] == 0, texts[name][-3000:]


def test_killed_worker_status(distributed_study):
    _, statuses, _ = distributed_study
    assert statuses["a"] == -signal.SIGKILL


def test_every_trial_once(distributed_study):
    results_dir, _, _ = distributed_study
    ids = [r["trial_id"] for r in records(results_dir)]
    assert len(ids) == MAX_TRIALS
    assert len(set(ids)) == MAX_TRIALS


def test_every_trial_completed(distributed_study):
    results_dir, _, _ = distributed_study
    assert {r["status"] for r in records(results_dir)} == {"completed"}


def test_both_workers_ran_trials(distributed_study):
    results_dir, _, _ = distributed_study
    assert {r["tuner_id"] for r in records(results_dir)} == {"a", "b"}


def test_killed_trial_rerun_by_same_worker(distributed_study):
    _, _, texts = distributed_study
    first_label = next(
        line.split(" start ")[0].split("study.trial: ")[1]
        for line in texts["a"].splitlines() if " start " in line and "study.trial" in line
    )
    assert f"{first_label} start" in texts["a_again"]


def test_tables_hold_all_trials(distributed_study):
    results_dir, _, _ = distributed_study
    table = pd.read_csv(results_dir / TRIALS_CSV)
    assert len(table) == MAX_TRIALS
    assert set(table["status"]) == {"completed"}


def isolate_environment(monkeypatch):
    """Give `configure` a copy of the environment without Keras Tuner's variables.

    `configure` sets them, and a later test in this process would otherwise
    build a tuner that serves as a chief and waits for workers forever.
    """
    names = (distributed.TUNER_ID, distributed.ORACLE_IP, distributed.ORACLE_PORT)
    copy = {key: value for key, value in os.environ.items() if key not in names}
    monkeypatch.setattr(os, "environ", copy)


@pytest.mark.parametrize(
    ("chief", "worker", "fragment"),
    [
        (None, "a", "needs --chief"),
        ("127.0.0.1:0", None, "port from 1 to 65535"),
        ("localhost:http", None, "[HOST:]PORT"),
        ("127.0.0.1:8000", "chief_2", "without the word 'chief'"),
    ],
)
def test_configure_rejects(monkeypatch, chief, worker, fragment):
    isolate_environment(monkeypatch)

    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        distributed.configure(chief, worker)


def test_configure_defaults_to_loopback(monkeypatch):
    isolate_environment(monkeypatch)

    role = distributed.configure("8123", None)

    assert role == "chief"
    assert os.environ[distributed.ORACLE_IP] == "127.0.0.1"
    assert os.environ[distributed.ORACLE_PORT] == "8123"
