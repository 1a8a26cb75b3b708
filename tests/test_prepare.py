"""The `python -m study.prepare` command: exit statuses and one-line errors."""

import subprocess
import sys
from pathlib import Path

import pytest

import study.prepare
from study.cli import run_main
from study.data import load_cifar10

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_SHA256 = "81b8af92bc76caa2376c04b1b05b9f5a58b1bf71ee223d713bcb15c38316f7b3"


def test_tiny_data_rejected(cifar_files, capsys):
    path = cifar_files.npz()

    status = run_main(study.prepare.main, ["--data", str(path), "--weights", "none"])

    stderr_lines = capsys.readouterr().err.splitlines()
    assert status == 2
    assert len(stderr_lines) == 1
    assert stderr_lines[0].startswith("error:")
    assert str(path) in stderr_lines[0]
    assert "expected 50000" in stderr_lines[0]


def load_any_count(path):
    return load_cifar10(path, expected_counts=None)


def test_missing_weights_rejected(cifar_files, capsys, tmp_path, monkeypatch, fresh_weights_cache):
    # The command resolves the weights only after the data loads, so accept
    # the tiny copy's counts here.
    monkeypatch.setattr(study.prepare, "load_cifar10", load_any_count)
    weights = tmp_path / "absent.weights.h5"

    status = run_main(
        study.prepare.main, ["--data", str(cifar_files.npz()), "--weights", str(weights)]
    )

    stderr_lines = capsys.readouterr().err.splitlines()
    assert status == 2
    assert len(stderr_lines) == 1
    assert stderr_lines[0].startswith("error:")
    assert str(weights) in stderr_lines[0]


def test_unknown_option_exits_2(capsys):
    with pytest.raises(SystemExit) as caught:
        study.prepare.main(["--bogus"])

    stderr_lines = capsys.readouterr().err.splitlines()
    assert caught.value.code == 2
    assert len(stderr_lines) == 1
    assert "--bogus" in stderr_lines[0]


def test_subprocess_missing_data(tmp_path):
    missing = tmp_path / "nonexistent.npz"

    result = subprocess.run(
        [sys.executable, "-m", "study.prepare", "--data", str(missing)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    stderr_lines = result.stderr.splitlines()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(stderr_lines) == 1
    assert stderr_lines[0].startswith("error: CIFAR-10 file not found")
    assert str(missing) in stderr_lines[0]


@pytest.mark.real
def test_real_data_no_weights(real_data_path, capsys, fresh_weights_cache):
    status = run_main(study.prepare.main, ["--data", str(real_data_path), "--weights", "none"])

    stdout = capsys.readouterr().out
    assert status == 0
    assert REAL_SHA256 in stdout
    assert "50000 train / 10000 test images" in stdout
    assert "none (random initialisation)" in stdout
