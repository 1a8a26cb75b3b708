"""The report command: figures, Markdown and self-contained HTML from synthetic results."""

import json
import logging
import os

import numpy as np
import pandas as pd
import pytest

from study import figures
from study.cli import run_main
from study.data import CLASS_NAMES
from study.records import EPOCHS_CSV, TRIALS_CSV, write_record, write_tables
from study.report import main
from study.report_text import language

FIXED_HYPERPARAMETERS = {
    "units_1": 256,
    "units_2": 64,
    "learning_rate_head": 1e-3,
    "learning_rate_finetune": 1e-5,
    "dropout": 0.0,
    "l2": 0.0,
    "preprocessing": "scale",
    "image_size": 32,
    "bn_policy": "trainable",
    "finetune_depth": "all",
}
DATA_SHA256 = "ab" * 32
WEIGHTS_SHA256 = "cd" * 32
FAILED_REASON = "FailedTrialError: loss became nan in phase 2 epoch 1; lower the learning rate"
TEST_IMAGES = 40
EXAMPLES = 12
# The stored predictions get 3 of every 40 test images wrong.
WRONG = (1, 7, 20)


def history(epochs: int, final_accuracy: float, best_val_accuracy: float) -> dict:
    """Epoch metrics whose last training accuracy and best validation accuracy are given."""
    return {
        "loss": [2.0 - 0.2 * i for i in range(epochs)],
        "accuracy": [final_accuracy - 0.05 * (epochs - 1 - i) for i in range(epochs)],
        "val_loss": [2.1 - 0.1 * i for i in range(epochs)],
        "val_accuracy": [best_val_accuracy - 0.02 * (epochs - 1 - i) for i in range(epochs)],
    }


def trial_record(space, size, trial_id, protocol, *, hyperparameters=None, status="completed",
                 reason=None, objective=0.5, head_train=0.3, head_test=0.3,
                 final_train=0.9, test=0.5, predictions=None) -> dict:
    """A trial record as `study.trial` writes it: 2 head epochs and 3 fine-tuning epochs."""
    train = size if protocol == "test" else size * 9 // 10
    record = {
        "search_space": space,
        "size": size,
        "protocol": protocol,
        "trial_id": trial_id,
        "status": status,
        "reason": reason,
        "seed": 0,
        "trial_seed": 1,
        "hyperparameters": dict(hyperparameters or FIXED_HYPERPARAMETERS),
        "sizes": {"train": train, "validation": size - train or 10000, "test": 10000},
        "phases": {
            "head": {
                "history": history(2, head_train, head_test),
                "test_accuracy": head_test,
                "test_loss": 1.9,
                "path": "cached_features",
                "duration_s": 60.0,
            },
        },
        "started_at": "2026-01-01T00:00:00+00:00",
        "data_kind": "npz",
        "data_sha256": DATA_SHA256,
        "weights_route": "npm",
        "weights_sha256": WEIGHTS_SHA256,
        "duration_s": 600.0,
    }
    if status == "completed":
        record["objective"] = objective
        record["phases"]["finetune"] = {
            "history": history(3, final_train, objective),
            "test_accuracy": test,
            "test_loss": 1.5,
            "duration_s": 500.0,
        }
    if predictions is not None:
        record["predictions"] = predictions
    return record


def project_config(space, size, protocol) -> dict:
    """The keys of study_config.json that the report reads."""
    return {
        "search_space": {
            "name": space,
            "training": {
                "epochs_head": 2,
                "epochs_finetune": 3,
                "batch_size": 64,
                "optimizer": "adam",
                "early_stopping_patience": 0,
                "validation_protocol": protocol,
                "validation_fraction": 0.1,
            },
            "tuner": {"oracle": "grid" if space == "baseline" else "random", "max_trials": 3},
        },
        "search_space_fingerprint": f"{space:0<12}" + "0" * 52,
        "data_source": "/data/cifar10.npz",
        "data_kind": "npz",
        "data_sha256": DATA_SHA256,
        "weights_route": "npm",
        "weights_sha256": WEIGHTS_SHA256,
        "keras_backend": "tensorflow",
        "machine": "testhost x86_64 2 CPUs",
        "size": size,
        "protocol": protocol,
    }


def write_predictions(trial_dir) -> dict:
    """Store a fake predictions.npz in `trial_dir` and return the record's predictions entry."""
    labels = (np.arange(TEST_IMAGES) % 10).astype(np.uint8)
    predicted = labels.copy()
    for index in WRONG:
        predicted[index] = (labels[index] + 1) % 10
    probabilities = np.full((TEST_IMAGES, 10), 0.01, dtype=np.float16)
    probabilities[np.arange(TEST_IMAGES), predicted] = 0.91
    examples = np.random.default_rng(0).integers(0, 256, (EXAMPLES, 32, 32, 3), dtype=np.uint8)
    trial_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        trial_dir / "predictions.npz",
        probabilities=probabilities, labels=labels, examples=examples,
    )
    accuracy = 1 - len(WRONG) / TEST_IMAGES
    return {"file": "predictions.npz", "weights": "best_checkpoint", "epoch": 2,
            "test_accuracy": accuracy}


def trial_path(results, space, size, trial_id):
    return results / space / f"size_{size}" / f"trial_{trial_id}"


def add_trial(results, record: dict) -> None:
    space, size = record["search_space"], record["size"]
    write_record(trial_path(results, space, size, record["trial_id"]), record)
    config = results / space / f"size_{size}" / "study_config.json"
    if not config.exists():
        config.write_text(json.dumps(project_config(space, size, record["protocol"])))


def build_results(results) -> None:
    """Two search spaces: baseline at 1,000, 10,000 and 50,000, default at 1,000 and 10,000."""
    # The record names a predictions file that is not in the trial folder.
    add_trial(results, trial_record(
        "baseline", 1000, "0", "test", objective=0.21, test=0.2,
        predictions={"file": "predictions.npz", "weights": "final", "epoch": None},
    ))
    add_trial(results, trial_record(
        "baseline", 1000, "1", "test", status="failed", reason=FAILED_REASON,
    ))

    predictions = write_predictions(trial_path(results, "baseline", 10000, "0"))
    add_trial(results, trial_record(
        "baseline", 10000, "0", "test", objective=0.255, head_train=0.31, head_test=0.305,
        final_train=0.92, test=0.2468, predictions=predictions,
    ))
    add_trial(results, trial_record("baseline", 10000, "1", "test", objective=0.2, test=0.19))
    add_trial(results, trial_record(
        "baseline", 50000, "0", "test", objective=0.6, head_train=0.4, head_test=0.41,
        final_train=0.95, test=0.6512,
    ))

    rates = (1e-4, 1e-3, 5e-3)
    for trial_id, (units, rate, l2) in enumerate(zip((128, 256, 512), rates, (0.0, 1e-5, 1e-4))):
        hyperparameters = {**FIXED_HYPERPARAMETERS, "units_1": units,
                           "learning_rate_head": rate, "l2": l2, "preprocessing": "caffe"}
        best = trial_id == 1
        predictions = (
            write_predictions(trial_path(results, "default", 1000, "1")) if best else None
        )
        add_trial(results, trial_record(
            "default", 1000, str(trial_id), "holdout", hyperparameters=hyperparameters,
            objective=0.4 + (0.1 if best else 0.0), test=0.45, predictions=predictions,
        ))

    broken = trial_path(results, "default", 10000, "0")
    broken.mkdir(parents=True)
    (broken / "predictions.npz").write_bytes(b"not an npz file")
    add_trial(results, trial_record(
        "default", 10000, "0", "holdout", objective=0.7, test=0.68,
        predictions={"file": "predictions.npz", "weights": "final", "epoch": None},
    ))
    add_trial(results, trial_record(
        "default", 10000, "1", "holdout", status="interrupted", reason="KeyboardInterrupt: ",
    ))

    runs = [
        {"run": "baseline_sweep", "command": "python -m study.search --search-space baseline",
         "commit": "abc1234", "machine": "testhost", "started": "2026-01-01T00:00:00Z",
         "wall_s": 3725},
        {"run": "default_sweep", "command": "python -m study.search --search-space default",
         "commit": "def5678", "machine": "testhost", "started": "2026-01-02T00:00:00Z",
         "wall_s": 95, "exit": 0},
    ]
    (results / "runs.jsonl").write_text("".join(json.dumps(run) + "\n" for run in runs))


EXPECTED_FIGURES = {
    "curves_baseline_1000.png",
    "curves_baseline_10000.png",
    "curves_baseline_50000.png",
    "curves_default_1000.png",
    "curves_default_10000.png",
    "overfitting.png",
    "validation_loss.png",
    "examples_baseline_10000.png",
    "confusion_baseline_10000.png",
    "examples_default_1000.png",
    "confusion_default_1000.png",
    "hyperparameters_default.png",
}


def caption_line(markdown: str, start: str) -> str:
    """Return the line of `markdown` that contains `start`."""
    return next(line for line in markdown.splitlines() if start in line)


def run_report(*arguments) -> int:
    return run_main(main, [str(argument) for argument in arguments])


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    path = tmp_path_factory.mktemp("results")
    build_results(path)
    return path


@pytest.fixture(scope="module")
def report(results, tmp_path_factory):
    """The English report of `results`, written once for the module."""
    out = tmp_path_factory.mktemp("report")
    assert run_report("--results-dir", results, "--out", out) == 0
    return out


@pytest.fixture(scope="module")
def markdown(report) -> str:
    return (report / "report.md").read_text()


@pytest.fixture(scope="module")
def page(report) -> str:
    return (report / "report.html").read_text()


@pytest.fixture(scope="module")
def german(results, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("report_de")
    assert run_report("--results-dir", results, "--out", out, "--lang", "de") == 0
    return (out / "report.md").read_text()


@pytest.fixture
def small_results(tmp_path):
    """One baseline trial at 10,000 images, with current tidy tables."""
    results = tmp_path / "results"
    add_trial(results, trial_record("baseline", 10000, "0", "test", test=0.2468))
    write_tables(results)
    return results


def test_report_writes_both_formats(report):
    assert (report / "report.md").is_file()
    assert (report / "report.html").is_file()


def test_report_writes_every_figure(report):
    written = {path.name for path in report.glob("*.png")}

    assert written == EXPECTED_FIGURES


def test_markdown_links_every_figure(markdown):
    unlinked = [name for name in EXPECTED_FIGURES if f"]({name})" not in markdown]

    assert unlinked == []


def test_html_has_no_external_references(page):
    assert 'src="http' not in page
    assert 'href="http' not in page
    assert "http://" not in page
    assert "https://" not in page
    assert "<link" not in page
    assert "<script" not in page
    assert "url(" not in page


def test_html_embeds_every_figure(report, page):
    import base64

    assert page.count('src="data:image/png;base64,') == len(EXPECTED_FIGURES)
    for name in sorted(EXPECTED_FIGURES):
        encoded = base64.b64encode((report / name).read_bytes()).decode("ascii")
        assert encoded in page, name


def test_baseline_table_markdown(markdown):
    row = "| 10,000 | After fine-tuning: test accuracy | 0.267 | 0.247 | −2.0 |"

    assert row in markdown


def test_baseline_table_head_phase(markdown):
    assert "| 10,000 | Head phase: train accuracy | 0.37 | 0.310 | −6.0 |" in markdown
    assert "| 10,000 | Head phase: test accuracy | 0.36 | 0.305 | −5.5 |" in markdown
    assert "| 10,000 | After fine-tuning: train accuracy | 0.97 | 0.920 | −5.0 |" in markdown


def test_baseline_table_50000(markdown):
    assert "| 50,000 | After fine-tuning: test accuracy | 0.663 | 0.651 | −1.2 |" in markdown
    assert "| 50,000 | Head phase: train accuracy | – | 0.400 | – |" in markdown


def test_baseline_table_html(page):
    assert '<td class="number">0.247</td>' in page


def test_baseline_data_copy(markdown):
    assert "`/data/cifar10.npz` (npz)" in markdown
    assert f"`{DATA_SHA256[:12]}…`" in markdown


def test_overfitting_table_gap(markdown):
    # Head-phase test accuracy 0.305, then training accuracy 0.920 minus test
    # accuracy 0.2468: 67.3 percentage points.
    assert "| `baseline` | 10,000 | 10,000 | 0 | 0.305 | 0.920 | 0.247 | +67.3 |" in markdown


def test_sweep_command_repeats_overrides(tmp_path):
    from study.report_data import Results
    from study.report_sections import _sweep_command

    config = {"search_space": {"training": {"epochs_head": 3, "epochs_finetune": 5},
                               "tuner": {"oracle": "bayesian", "max_trials": 10}}, "seed": 4}
    results = Results(
        directory=tmp_path, trials=pd.DataFrame(), epochs=pd.DataFrame(),
        configs={("default", 1000): config}, runs=[],
    )

    command = _sweep_command("default", [1000, 2500], results)

    assert "--epochs-head 3" in command
    assert "--epochs-finetune" not in command
    assert "--tuner" not in command
    assert "--seed 4" in command


def test_missing_sweep_sizes_named(markdown):
    assert "`baseline`: no completed trial at 2,500, 5,000, 25,000." in markdown
    assert "`default`: no completed trial at 2,500, 5,000, 25,000, 50,000." in markdown


def test_sweep_command_listed(markdown):
    command = (
        "python -m study.search --search-space baseline --size 1000 2500 5000 10000 25000 50000"
    )

    assert command in markdown


def test_size_without_predictions_reported(markdown):
    assert "`baseline`, size 50,000: the best trial 0 has no predictions file" in markdown


def test_deleted_predictions_reported(markdown):
    expected = (
        "`baseline`, size 1,000: the record of the best trial 0 names `predictions.npz`, "
        "which is missing from its trial folder."
    )

    assert expected in markdown


def test_unreadable_predictions_reported(markdown):
    expected = (
        "`default`, size 10,000: the predictions file of trial 0 is unreadable "
        "(not a .npz file (no zip header))."
    )

    assert expected in markdown


def test_confusion_caption_accuracy(markdown):
    # 37 of the 40 stored predictions are right.
    expected = "Accuracy of these predictions: 0.925, from the best phase-2 checkpoint (epoch 2)."

    assert expected in markdown


def test_confusion_caption_optimistic(markdown):
    caption = caption_line(markdown, "`baseline`, size 10,000, trial 0: confusion")

    assert "selected on the test set" in caption


def test_confusion_caption_holdout(markdown):
    caption = caption_line(markdown, "`default`, size 1,000, trial 1: confusion")

    assert "selected on the test set" not in caption


def test_failed_reason_listed(markdown, page):
    assert FAILED_REASON in markdown
    assert FAILED_REASON in page


def test_interrupted_trial_listed(markdown):
    assert "| `default` | 10,000 | 1 | interrupted | KeyboardInterrupt: |" in markdown


def test_best_hyperparameters_table(markdown):
    # baseline at 1,000, 10,000 and 50,000 images, then default at 1,000 and 10,000.
    assert "| `units_1` | 256 | 256 | 256 |" in markdown
    assert "| `l2` | 1e-05 | 0 |" in markdown


def test_fixed_space_has_no_panels(markdown):
    assert "`baseline`: no hyperparameter varies between its completed trials." in markdown


def test_provenance_inputs(markdown):
    assert f"sha256 `{DATA_SHA256}`" in markdown
    assert f"route `npm`, sha256 `{WEIGHTS_SHA256}`" in markdown


def test_provenance_budgets(markdown):
    row = "| `default` | 1,000 | `default00000…` | 2 | 3 | 64 | `random` | 3 | `holdout` |"

    assert row in markdown


def test_provenance_trial_time(markdown):
    # Three trials of 600 s each.
    row = "| `default` | 1,000 | testhost x86_64 2 CPUs | tensorflow | 3 / 3 | 30 min 00 s |"

    assert row in markdown


def test_provenance_runs(markdown):
    command = "`python -m study.search --search-space baseline`"

    assert f"| baseline_sweep | {command} | `abc1234` |" in markdown
    assert "| 1 h 02 min | – |" in markdown
    assert "| 1 min 35 s | 0 |" in markdown


def test_german_headings(german):
    for heading in (
        "## Reproduktion der Baseline",
        "## Lernkurven",
        "## Überanpassung und Stichprobengröße",
        "## Beispielvorhersagen",
        "## Hyperparameter",
        "## Herkunft",
    ):
        assert heading in german, heading


def test_german_numbers(german):
    assert "| 10.000 | Nach dem Fine-Tuning: Testgenauigkeit | 0,267 | 0,247 | −2,0 |" in german


def test_german_has_no_english_headings(german):
    assert "## Learning curves" not in german
    assert "## Provenance" not in german


def test_rerun_identical_bytes(results, report, tmp_path):
    again = tmp_path / "again"

    assert run_report("--results-dir", results, "--out", again) == 0

    first = {path.name: path.read_bytes() for path in report.iterdir()}
    second = {path.name: path.read_bytes() for path in again.iterdir()}
    assert sorted(second) == sorted(first)
    changed = [name for name in first if first[name] != second[name]]
    assert changed == []


def test_stale_tables_rebuilt(small_results, tmp_path, caplog):
    past = os.stat(small_results / TRIALS_CSV).st_mtime - 60
    for table in (TRIALS_CSV, EPOCHS_CSV):
        os.utime(small_results / table, (past, past))
    add_trial(small_results, trial_record("baseline", 10000, "1", "test", objective=0.1))

    with caplog.at_level(logging.INFO, logger="study.report_data"):
        assert run_report("--results-dir", small_results, "--out", tmp_path / "out") == 0

    trials = pd.read_csv(small_results / TRIALS_CSV, dtype={"trial_id": str})
    assert sorted(trials["trial_id"]) == ["0", "1"]
    assert any("rebuilt" in record.getMessage() for record in caplog.records)


def test_missing_tables_rebuilt(small_results, tmp_path):
    (small_results / EPOCHS_CSV).unlink()

    assert run_report("--results-dir", small_results, "--out", tmp_path / "out") == 0

    assert (small_results / EPOCHS_CSV).is_file()


def test_missing_baseline_size_command(small_results, tmp_path):
    out = tmp_path / "out"

    assert run_report("--results-dir", small_results, "--out", out) == 0

    markdown = (out / "report.md").read_text()
    assert "No completed `baseline` trial at 50,000 images." in markdown
    assert "python -m study.search --search-space baseline --size 50000" in markdown


def test_missing_runs_file_reported(small_results, tmp_path):
    out = tmp_path / "out"

    assert run_report("--results-dir", small_results, "--out", out) == 0

    assert "The results folder has no `runs.jsonl`." in (out / "report.md").read_text()


def test_default_out_folders(small_results):
    assert run_report("--results-dir", small_results) == 0
    assert run_report("--results-dir", small_results, "--lang", "de") == 0

    assert (small_results / "report" / "report.md").is_file()
    assert "## Lernkurven" in (small_results / "report_de" / "report.md").read_text()


def test_empty_folder_exit_2(tmp_path, capsys):
    status = run_report("--results-dir", tmp_path, "--out", tmp_path / "out")

    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1
    assert "no trial records" in err
    assert "python -m study.search" in err


def test_absent_folder_exit_2(tmp_path, capsys):
    status = run_report("--results-dir", tmp_path / "absent", "--out", tmp_path / "out")

    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1
    assert "results folder not found" in err


def test_unknown_language_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_report("--results-dir", tmp_path, "--lang", "fr")

    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1
    assert "invalid choice: 'fr'" in err


def test_example_grid_marks():
    labels = np.array([0, 1, 2])
    predicted = np.array([0, 5, 2])
    images = np.zeros((3, 32, 32, 3), dtype=np.uint8)

    figure = figures.example_grid(images, labels, predicted, CLASS_NAMES, language("en"))

    titles = [ax.title for ax in figure.axes[:3]]
    assert titles[0].get_text() == "✓ airplane\ntrue: airplane"
    assert titles[1].get_text() == "✗ dog\ntrue: automobile"
    assert titles[0].get_color() == figures.RIGHT_COLOUR
    assert titles[1].get_color() == figures.WRONG_COLOUR


def test_confusion_rows_normalised():
    labels = np.array([0, 0, 0, 1])
    predicted = np.array([0, 0, 3, 1])

    figure = figures.confusion_matrix(labels, predicted, CLASS_NAMES, language("en"))

    shares = np.asarray(figure.axes[0].collections[0].get_array()).reshape(10, 10)
    assert shares[0, 0] == pytest.approx(2 / 3)
    assert shares[0, 3] == pytest.approx(1 / 3)
    assert shares[1, 1] == pytest.approx(1.0)
    # Classes without test images stay empty instead of dividing by zero.
    assert np.isnan(shares[2]).all()
