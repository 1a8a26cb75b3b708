"""The benchmark scripts run end to end, here on tiny data and random weights.

Their numbers only mean something on real data (see benchmarks/README.md);
these tests keep the scripts from breaking between the runs that matter.
"""

import importlib.util
import json
from pathlib import Path

import keras
import pytest

import study.data
from fixtures_study import tiny_cifar10

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def random_weights(tmp_path):
    keras.utils.set_random_seed(3)
    path = tmp_path / "random_resnet50_notop.weights.h5"
    keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    ).save_weights(path)
    return path


def test_throughput_prints_every_row(tmp_path, monkeypatch, capsys, random_weights):
    throughput = load_script("throughput")
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(study.data, "load_cifar10", lambda path: tiny_cifar10(10, 2))
    output = tmp_path / "throughput.json"

    status = throughput.main([
        "--size", "100", "--epochs-head", "2", "--epochs-finetune", "2",
        "--precision-seeds", "1", "--weights", str(random_weights), "--json", str(output),
    ])

    assert status == 0
    table = capsys.readouterr().out
    for row in (
        "fp32 matmul peak", "cache pass, pooled features (float16)", "computed in this run",
        "phase 1 per trial (2 epochs), naive", "phase 1 work per epoch, naive / cached",
        "head test accuracy, float16-rounded features", "phase 2 work per epoch, full / conv5",
        "whole trial, fastest valid path", "whole trial work, naive / fastest",
        "peak resident memory",
    ):
        assert row in table
    results = json.loads(output.read_text())
    assert len(results["head_test_accuracy_float16"]) == 1
    # Less work on every cached path: the head alone, and conv5 without the stages below.
    assert results["phase1_naive_gflops_per_epoch"] > 10 * results["phase1_cached_gflops_per_epoch"]
    assert results["phase2_full_gflops_per_epoch"] > results["phase2_conv5_gflops_per_epoch"]
    # float16 keeps 11 significant bits.
    assert results["cached_features_max_relative_error"] < 1e-3
