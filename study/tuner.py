"""A Keras Tuner `Tuner` whose every trial runs both transfer-learning phases.

Phase 1 trains the head with the backbone frozen. Phase 2 unfreezes the
backbone per the trial's `finetune_depth` and `bn_policy`, recompiles with
`learning_rate_finetune`, and fine-tunes. The objective is the best
`val_accuracy` of phase 2 (direction max).

A custom `run_trial` loses what `keras_tuner.Tuner.run_trial` does by default,
so this one does it explicitly. `_try_build` clears the Keras session and
collects garbage before each build. The best phase-2 epoch is checkpointed so
`get_best_models()` works. TensorBoard logs carry the trial's HParams on the
TensorFlow backend, and `TerminateOnNaN` plus per-phase early stopping guard
each fit.

Under Hyperband the oracle's epoch budget (`tuner/epochs`) applies to phase 2.
A trial that continues an earlier Hyperband trial (`tuner/trial_id`) loads that
trial's best checkpoint and skips phase 1.

After each phase the model is evaluated on the test set. Those figures go into
the trial record for the report only and are not passed to the oracle.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import math
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import keras
import keras_tuner
import numpy as np

from study.callbacks import ProgressLog, format_duration
from study.errors import StudyError
from study.features import CUT, CUT_BELOW_STAGE
from study.hypermodel import compile_model, head_model, unfreeze_backbone, upper_model
from study.records import RECORD_FILE, write_atomic, write_record, write_tables
from study.search_space import SearchSpace
from study.splits import Splits

logger = logging.getLogger("study.tuner")

OBJECTIVE = keras_tuner.Objective("val_accuracy", direction="max")
CHECKPOINT_FILE = "checkpoint.weights.h5"
PREDICTIONS_FILE = "predictions.npz"
# Per-trial state for resuming an interrupted trial; removed when it completes.
RESUME_DIR = "resume"
# Test images stored beside the predictions, so a report can show examples
# without the data file.
EXAMPLE_IMAGES = 32
# Inference needs no gradients, so validation and test passes use larger
# batches than training unless the training batch is larger still.
EVALUATION_BATCH_SIZE = 256


def oracle_seed(study_seed: int) -> int:
    """Seed for the oracle, derived from the study seed and never 0.

    Keras Tuner 1.4 replaces a seed of 0 (any falsy seed) with a random one,
    so passing the study's default seed 0 unchanged would make the sampled
    hyperparameters differ from run to run.
    """
    digest = hashlib.sha256(f"{study_seed}:oracle".encode()).hexdigest()
    return int(digest[:8], 16) % (2**31 - 2) + 1


def make_oracle(
    kind: str,
    max_trials: int,
    seed: int,
    max_epochs: int,
    hyperband_factor: int = 3,
    max_consecutive_failures: int = 3,
) -> keras_tuner.Oracle:
    """Create the oracle named by `kind`, seeded from the study seed `seed`.

    The oracle stops the search with a `RuntimeError` once
    `max_consecutive_failures` trials in a row have failed.
    """
    seed = oracle_seed(seed)
    common = {"objective": OBJECTIVE, "seed": seed,
              "max_consecutive_failed_trials": max_consecutive_failures}
    if kind == "random":
        return keras_tuner.oracles.RandomSearchOracle(max_trials=max_trials, **common)
    if kind == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(max_trials=max_trials, **common)
    if kind == "grid":
        return keras_tuner.oracles.GridSearchOracle(max_trials=max_trials, **common)
    if kind == "hyperband":
        return keras_tuner.oracles.HyperbandOracle(
            max_epochs=max_epochs, factor=hyperband_factor, hyperband_iterations=1, **common
        )
    raise ValueError(f"unknown oracle {kind!r}")


def trial_seed(study_seed: int, trial_id: str) -> int:
    """Seed for one trial's weights and shuffling, derived from the study seed."""
    digest = hashlib.sha256(f"{study_seed}:{trial_id}".encode()).hexdigest()
    return int(digest[:8], 16) % (2**31 - 1)


class BestEpochCheckpoint(keras.callbacks.Callback):
    """Save the weights whenever the objective improves on the best so far.

    Args:
        filepath: the `.weights.h5` file to write.
        monitor: the metric to maximise.
        best: the best value of epochs run before an interruption, if any.
        target: the model whose weights are saved, when the fitted model
            only shares part of its layers (default: the fitted model).
    """

    def __init__(
        self,
        filepath: str,
        monitor: str = "val_accuracy",
        best: float = -math.inf,
        target: keras.Model | None = None,
    ):
        super().__init__()
        self.filepath = filepath
        self.monitor = monitor
        self.best = best
        self.target = target

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and math.isfinite(value) and value > self.best:
            self.best = value
            (self.target or self.model).save_weights(self.filepath)


class EpochHistoryFile(keras.callbacks.Callback):
    """Keep a phase's per-epoch metrics and seconds in a JSON file that survives a kill.

    On a resumed fit, the epochs after the one `BackupAndRestore` restored are
    dropped, so the history always matches the restored weights. Place it
    before the backup callback: a kill between the two writes then leaves one
    epoch too many here, which the next run drops, never one too few.
    """

    def __init__(self, path: Path, initial_epoch: int):
        super().__init__()
        self.path = Path(path)
        self.initial_epoch = initial_epoch
        self.history: dict[str, list[float]] = {}
        self.epoch_seconds: list[float] = []
        self._epoch_start = 0.0
        if self.path.is_file():
            try:
                saved = json.loads(self.path.read_text())
                self.history = saved["history"]
                self.epoch_seconds = saved["epoch_seconds"]
            except (ValueError, KeyError, TypeError):
                logger.warning("%s is unreadable; the phase's earlier epochs are lost", self.path)

    @property
    def restored_seconds(self) -> float:
        """Seconds of the epochs run before this fit, as far as they are kept."""
        return float(sum(self.epoch_seconds))

    def on_epoch_begin(self, epoch, logs=None):
        keep = max(epoch - self.initial_epoch, 0)
        self.history = {k: v[:keep] for k, v in self.history.items()}
        self.epoch_seconds = self.epoch_seconds[:keep]
        self._epoch_start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.epoch_seconds.append(time.monotonic() - self._epoch_start)
        content = {"history": self.history, "epoch_seconds": self.epoch_seconds}
        write_atomic(self.path, json.dumps(content))


class PhaseBackup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that lets the next `fit()` of the same model start afresh.

    Keras keeps the restored epoch in `model._initial_epoch` after `fit()`
    returns, and a later `fit()` on that model would start from it. Phase 2
    fits the same model as phase 1 on the full-model path, so it is cleared.
    """

    def __init__(self, backup_dir: str):
        super().__init__(backup_dir, double_checkpoint=True, delete_checkpoint=False)

    def on_train_begin(self, logs=None):
        # Keras writes the backup in place, so a kill during the first save
        # leaves a truncated file and no previous copy to fall back on.
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError) as exc:
            logger.warning(
                "backup in %s is unreadable (%s); the phase starts again from its "
                "first epoch", self.backup_dir, exc,
            )
            shutil.rmtree(self.backup_dir, ignore_errors=True)
            self.model._initial_epoch = None

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        self.model._initial_epoch = None


@dataclasses.dataclass(frozen=True)
class PhaseData:
    """Inputs and labels of one phase: images, or cached backbone features."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @classmethod
    def from_splits(cls, splits: Splits) -> PhaseData:
        return cls(
            splits.x_train, splits.y_train, splits.x_val, splits.y_val,
            splits.x_test, splits.y_test,
        )


def _first_non_finite(history: dict) -> tuple[int, float] | None:
    for epoch, value in enumerate(history.get("loss", [])):
        if not math.isfinite(value):
            return epoch, value
    return None


class TwoPhaseTuner(keras_tuner.Tuner):
    """Runs head training and fine-tuning in every trial.

    Args:
        hypermodel: a `study.hypermodel.TransferHyperModel`.
        oracle: from `make_oracle`.
        search_space: the parsed search space (training settings).
        size: training-set size of this project.
        study_seed: seed from which each trial's seed is derived.
        provenance: fields copied into every trial record (data and weights
            source and checksums).
        results_dir: folder whose tidy tables are rebuilt after each trial.
        feature_cache: a `study.features.FeatureCache`; phase 1 then trains
            the head on cached backbone features. None trains the full model
            with the backbone frozen.
        **kwargs: passed to `keras_tuner.Tuner` (directory, project_name,
            overwrite, ...).
    """

    def __init__(
        self,
        hypermodel,
        oracle,
        search_space: SearchSpace,
        size: int,
        study_seed: int,
        provenance: dict | None = None,
        results_dir: str | Path | None = None,
        feature_cache=None,
        **kwargs,
    ):
        self.search_space = search_space
        self.size = size
        self.study_seed = study_seed
        self.provenance = provenance or {}
        self.results_dir = Path(results_dir) if results_dir is not None else None
        self.feature_cache = feature_cache
        self.last_failure: str | None = None
        self._trial_seconds: list[float] = []
        super().__init__(hypermodel=hypermodel, oracle=oracle, **kwargs)

    # -- progress ---------------------------------------------------------

    def remaining_trials_or_none(self) -> int | None:
        """Trials left to start, or None when unknown.

        A distributed worker's oracle is a gRPC client that cannot tell.
        """
        if not isinstance(self.oracle, keras_tuner.Oracle):
            return None
        return self.remaining_trials

    def _trial_label(self, trial) -> str:
        total = self.oracle.max_trials or "?"
        try:
            number = int(trial.trial_id) + 1
        except ValueError:
            number = trial.trial_id
        return f"trial {number}/{total} size={self.size}"

    def on_trial_end(self, trial):
        # The tables come first: the oracle raises here when too many trials
        # in a row have failed, and the tables must include the last of them.
        if self.results_dir is not None:
            write_tables(self.results_dir)
        super().on_trial_end(trial)
        remaining = self.remaining_trials_or_none()
        if self._trial_seconds and remaining:
            mean = sum(self._trial_seconds) / len(self._trial_seconds)
            logger.info(
                "size=%d: %d trials left, about %s at %s per trial",
                self.size,
                remaining,
                format_duration(mean * remaining),
                format_duration(mean),
            )

    # -- the trial --------------------------------------------------------

    # TODO: resident memory grows by roughly one model plus its optimizer state
    # per trial (benchmarks/memory.py: 1576 -> 5036 MiB from trial 2 to 12 on
    # TensorFlow 2.21). No Keras model or tf.Variable survives a trial, and the
    # growth vanishes with run_eagerly=True, so memory held for graphs traced by
    # tf.function is the suspect. Running each trial in a child process would
    # bound it.
    def run_trial(self, trial, splits: Splits, verbose: int = 0, **kwargs):
        hp = trial.hyperparameters
        training = self.search_space.training
        seed = trial_seed(self.study_seed, trial.trial_id)
        keras.utils.set_random_seed(seed)
        trial_dir = Path(self.get_trial_dir(trial.trial_id))
        label = self._trial_label(trial)

        epochs_head = training.epochs_head
        epochs_finetune = hp.values.get("tuner/epochs", training.epochs_finetune)
        initial_epoch = hp.values.get("tuner/initial_epoch", 0)
        continues = hp.values.get("tuner/trial_id")
        if continues:
            epochs_head = 0

        finished = _completed_record(trial_dir, trial.trial_id)
        if finished is not None:
            # Killed after the record was written but before the oracle heard
            # of it: report the stored result instead of training again.
            logger.info("%s completed before the interruption; using its record", label)
            return finished["metrics"]

        record = {
            "search_space": self.search_space.name,
            "search_space_fingerprint": self.search_space.fingerprint,
            "size": self.size,
            "protocol": splits.protocol,
            "trial_id": trial.trial_id,
            "tuner_id": self.tuner_id,
            "status": "running",
            "reason": None,
            "seed": self.study_seed,
            "trial_seed": seed,
            "hyperparameters": {
                k: v for k, v in hp.values.items() if not k.startswith("tuner/")
            },
            "hyperband": {k: v for k, v in hp.values.items() if k.startswith("tuner/")},
            "sizes": splits.sizes(),
            "phases": {},
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **self.provenance,
        }
        write_record(trial_dir, record)
        started = time.monotonic()
        logger.info("%s start %s", label, _format_values(record["hyperparameters"]))
        try:
            metrics = self._run_phases(
                trial, splits, record, label, epochs_head, epochs_finetune,
                initial_epoch, continues, verbose,
            )
        except BaseException as exc:
            interrupted = not isinstance(exc, Exception)
            record["status"] = "interrupted" if interrupted else "failed"
            record["reason"] = f"{type(exc).__name__}: {exc}"
            record["duration_s"] = time.monotonic() - started
            write_record(trial_dir, record)
            logger.error(
                "%s %s: %s (%s)", label, record["status"], record["reason"],
                _format_values(record["hyperparameters"]),
            )
            if interrupted:
                raise
            shutil.rmtree(trial_dir / RESUME_DIR, ignore_errors=True)
            self.last_failure = record["reason"]
            if isinstance(exc, StudyError):
                # A configuration error fails every trial alike: stop at once.
                raise keras_tuner.errors.FatalError(str(exc)) from exc
            raise
        finally:
            gc.collect()
        record["status"] = "completed"
        record["objective"] = metrics[OBJECTIVE.name]
        record["metrics"] = metrics
        record["duration_s"] = time.monotonic() - started + _restored_seconds(record)
        write_record(trial_dir, record)
        shutil.rmtree(trial_dir / RESUME_DIR, ignore_errors=True)
        self._trial_seconds.append(record["duration_s"])
        logger.info(
            "%s done in %s: val_accuracy %.4f, test_accuracy %.4f (head %.4f)",
            label,
            format_duration(record["duration_s"]),
            metrics[OBJECTIVE.name],
            record["phases"]["finetune"]["test_accuracy"],
            record["phases"].get("head", {}).get("test_accuracy", float("nan")),
        )
        return metrics

    def _run_phases(
        self, trial, splits, record, label, epochs_head, epochs_finetune,
        initial_epoch, continues, verbose,
    ) -> dict:
        hp = trial.hyperparameters
        training = self.search_space.training
        trial_dir = Path(self.get_trial_dir(trial.trial_id))
        resume = trial_dir / RESUME_DIR
        images = PhaseData.from_splits(splits)
        model = self._try_build(hp)

        def finetune_estimate(seconds_per_epoch):
            # Fine-tuning trains the whole backbone: roughly 5x a head epoch on
            # CPU. The figure is only an estimate until phase 2 starts.
            return 5 * seconds_per_epoch * (epochs_finetune - initial_epoch)

        metrics = {}
        if epochs_head > 0:
            head = self._run_head_phase(
                model, hp, splits, images, label, epochs_head, resume,
                trial, verbose, finetune_estimate,
            )
            record["phases"]["head"] = head
            write_record(trial_dir, record)
            metrics.update(
                {f"head_{k}": v for k, v in _best_metrics(head["history"]).items()}
            )

        unfreeze_backbone(model, hp.get("finetune_depth"), hp.get("bn_policy"))
        compile_model(model, training.optimizer, hp.get("learning_rate_finetune"))
        if continues:
            # NOTE: no test or real run has reached this Hyperband branch yet.
            model.load_weights(
                str(Path(self.get_trial_dir(continues)) / CHECKPOINT_FILE)
            )
            logger.info("%s continues trial %s from its best checkpoint", label, continues)
        progress = ProgressLog(label, 2, epochs_finetune)
        checkpoint = trial_dir / CHECKPOINT_FILE
        activations, why_not = self._finetune_activations(hp, splits)
        if activations is not None:
            cut = CUT_BELOW_STAGE[hp.get("finetune_depth")]
            upper = upper_model(model, cut)
            compile_model(upper, training.optimizer, hp.get("learning_rate_finetune"))
            logger.info(
                "%s phase=2 trains from %s up on cached %s activations",
                label, hp.get("finetune_depth"), cut,
            )
            finetune = self._fit_phase(
                upper, activations, 2, epochs_finetune, initial_epoch, progress, trial,
                verbose, resume / "phase_2_cached_activations", checkpoint=checkpoint,
                checkpoint_model=model,
            )
            finetune["path"] = "cached_activations"
        else:
            logger.info("%s phase=2 trains the full model (%s)", label, why_not)
            finetune = self._fit_phase(
                model, images, 2, epochs_finetune, initial_epoch, progress, trial, verbose,
                resume / "phase_2_full_model", checkpoint=checkpoint,
            )
            finetune["path"] = "full_model"
        record["phases"]["finetune"] = finetune
        metrics.update(_best_metrics(finetune["history"]))
        record["predictions"] = _write_predictions(
            model, checkpoint, images, trial_dir / PREDICTIONS_FILE, finetune["history"]
        )
        del model
        return metrics

    def _run_head_phase(
        self, model, hp, splits, images, label, epochs, resume, trial, verbose,
        finetune_estimate,
    ) -> dict:
        """Phase 1, on cached features when possible; its result survives a kill."""
        done_path = resume / "phase_1.json"
        weights_path = resume / "phase_1.weights.h5"
        if done_path.is_file() and weights_path.is_file():
            model.load_weights(str(weights_path))
            logger.info("%s phase=1 restored from %s", label, resume)
            head = json.loads(done_path.read_text())
            head["restored"] = True
            return head

        progress = ProgressLog(label, 1, epochs, finetune_estimate)
        features, why_not = self._head_features(hp, splits)
        if features is not None:
            head_net = head_model(model)
            compile_model(head_net, self.search_space.training.optimizer,
                          hp.get("learning_rate_head"))
            logger.info("%s phase=1 trains the head on cached backbone features", label)
            head = self._fit_phase(
                head_net, features, 1, epochs, 0, progress, trial, verbose,
                resume / "phase_1_cached_features",
            )
            head["path"] = "cached_features"
        else:
            logger.info("%s phase=1 trains the full model with the backbone frozen (%s)",
                        label, why_not)
            head = self._fit_phase(
                model, images, 1, epochs, 0, progress, trial, verbose,
                resume / "phase_1_full_model",
            )
            head["path"] = "full_model"
        # Keras wants the .weights.h5 suffix, so the temporary name keeps it.
        temporary = resume / f".phase_1.{os.getpid()}.weights.h5"
        model.save_weights(str(temporary))
        os.replace(temporary, weights_path)
        write_atomic(done_path, json.dumps(head))
        return head

    def _head_features(self, hp, splits) -> tuple[PhaseData | None, str]:
        """Return cached features for phase 1, or None and the reason they cannot be used."""
        return self._cached_inputs(hp, splits, CUT)

    def _finetune_activations(self, hp, splits) -> tuple[PhaseData | None, str]:
        """Return cached activations below the fine-tuned stages, or None and the reason."""
        depth = hp.get("finetune_depth")
        if depth not in CUT_BELOW_STAGE:
            return None, f"finetune_depth={depth} leaves no frozen part to cache"
        return self._cached_inputs(hp, splits, CUT_BELOW_STAGE[depth])

    def _cached_inputs(self, hp, splits, cut: str) -> tuple[PhaseData | None, str]:
        if self.feature_cache is None:
            return None, "feature cache off"
        reason = self.feature_cache.unavailable_reason()
        if reason:
            return None, reason
        cached = self.feature_cache.get(hp.get("preprocessing"), hp.get("image_size"), cut)
        x_train, x_val, x_test = cached.for_splits(splits)
        data = PhaseData(x_train, splits.y_train, x_val, splits.y_val, x_test, splits.y_test)
        return data, ""

    def _fit_phase(
        self, model, data: PhaseData, phase, epochs, initial_epoch, progress, trial, verbose,
        resume_dir: Path, checkpoint: Path | None = None, checkpoint_model=None,
    ) -> dict:
        """Fit one phase, resuming from `resume_dir`, then evaluate on the test set.

        `checkpoint_model` is the model whose weights the best-epoch checkpoint
        saves, when `model` shares only part of its layers.
        """
        training = self.search_space.training
        history_file = EpochHistoryFile(resume_dir / "history.json", initial_epoch)
        done = len(history_file.history.get("loss", []))
        restored_seconds = history_file.restored_seconds
        if done:
            logger.info(
                "%s phase=%d resumes after epoch %d/%d from %s",
                self._trial_label(trial), phase, initial_epoch + done, epochs, resume_dir,
            )
        callbacks = [
            keras.callbacks.TerminateOnNaN(),
            progress,
            history_file,
            PhaseBackup(str(resume_dir / "backup")),
        ]
        if checkpoint is not None:
            earlier = [v for v in history_file.history.get(OBJECTIVE.name, []) if math.isfinite(v)]
            callbacks.append(
                BestEpochCheckpoint(
                    str(checkpoint), best=max(earlier, default=-math.inf),
                    target=checkpoint_model,
                )
            )
        if training.early_stopping_patience > 0:
            # TODO: after a resume the patience counter starts again from zero,
            # and restoring the best weights only covers the epochs run since.
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor=OBJECTIVE.name,
                    mode="max",
                    patience=training.early_stopping_patience,
                    restore_best_weights=True,
                )
            )
        callbacks += self._tensorboard_callbacks(trial, phase)

        started = time.monotonic()
        model.fit(
            data.x_train,
            data.y_train,
            validation_data=(data.x_val, data.y_val),
            epochs=epochs,
            initial_epoch=initial_epoch,
            batch_size=training.batch_size,
            validation_batch_size=max(training.batch_size, EVALUATION_BATCH_SIZE),
            shuffle=True,
            callbacks=callbacks,
            verbose=verbose,
        )
        fit_seconds = time.monotonic() - started
        history = history_file.history
        bad = _first_non_finite(history)
        if bad is not None:
            raise keras_tuner.errors.FailedTrialError(
                f"loss became {bad[1]} in phase {phase} epoch {bad[0] + 1}; "
                "lower the learning rate"
            )

        started = time.monotonic()
        test_loss, test_accuracy = model.evaluate(
            data.x_test,
            data.y_test,
            batch_size=max(training.batch_size, EVALUATION_BATCH_SIZE),
            verbose=0,
        )
        logger.info(
            "%s phase=%d test_loss %.3f test_accuracy %.4f (report only)",
            self._trial_label(trial), phase, test_loss, test_accuracy,
        )
        return {
            "history": history,
            "epochs_planned": epochs - initial_epoch,
            "initial_epoch": initial_epoch,
            "resumed_after_epochs": done,
            "test_loss": float(test_loss),
            "test_accuracy": float(test_accuracy),
            # Includes the epochs run before an interruption.
            "duration_s": fit_seconds + restored_seconds,
            "restored_s": restored_seconds,
            "evaluation_s": time.monotonic() - started,
        }

    def _tensorboard_callbacks(self, trial, phase: int) -> list:
        if keras.backend.backend() != "tensorflow":
            if not getattr(self, "_warned_tensorboard", False):
                logger.info(
                    "TensorBoard logs and HParams need the TensorFlow backend; "
                    "skipped on %s", keras.backend.backend(),
                )
                self._warned_tensorboard = True
            return []
        from tensorboard.plugins.hparams import api as hparams_api

        log_dir = str(Path(self.project_dir) / "tensorboard" / f"trial_{trial.trial_id}" / f"phase_{phase}")
        hparams = {
            k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")
        }
        return [
            keras.callbacks.TensorBoard(log_dir=log_dir),
            hparams_api.KerasCallback(log_dir, hparams, trial_id=trial.trial_id),
        ]

    def load_model(self, trial):
        """Build the trial's model and load its best phase-2 checkpoint."""
        model = self._try_build(trial.hyperparameters)
        model.load_weights(str(Path(self.get_trial_dir(trial.trial_id)) / CHECKPOINT_FILE))
        return model


def _write_predictions(
    model, checkpoint: Path, data: PhaseData, path: Path, history: dict
) -> dict:
    """Store test-set class probabilities of the best phase-2 weights.

    Loads the best-epoch checkpoint when one was written; otherwise the final
    weights are used. The file also contains the true labels and
    `EXAMPLE_IMAGES` test images of mixed classes with their indices
    (`example_indices`), so a report needs neither the model nor the data file.
    """
    source = "final"
    if checkpoint.is_file():
        model.load_weights(str(checkpoint))
        source = "best_checkpoint"
    probabilities = model.predict(
        data.x_test, batch_size=EVALUATION_BATCH_SIZE, verbose=0
    ).astype(np.float16)
    labels = np.asarray(data.y_test, dtype=np.uint8)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))
    indices = example_indices(labels, EXAMPLE_IMAGES)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.npz")
    np.savez_compressed(
        temporary,
        probabilities=probabilities,
        labels=labels,
        example_indices=indices,
        examples=np.asarray(data.x_test[indices], dtype=np.uint8),
    )
    os.replace(temporary, path)
    best = _best_metrics(history)
    val = history.get(OBJECTIVE.name, [])
    epoch = val.index(best[OBJECTIVE.name]) + 1 if source == "best_checkpoint" and val else None
    return {"file": path.name, "weights": source, "epoch": epoch, "test_accuracy": accuracy}


def example_indices(labels: np.ndarray, count: int) -> np.ndarray:
    """Indices of `count` test images taken class by class in turn.

    Image k is the (k // classes)-th image of class k % classes, so the
    examples cover every class even when a test set is sorted by label.
    """
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    picked = []
    for k in range(count * len(by_class)):
        members = by_class[k % len(by_class)]
        rank = k // len(by_class)
        if rank < len(members):
            picked.append(members[rank])
        if len(picked) == count:
            break
    return np.asarray(picked, dtype=np.int32)


def _restored_seconds(record: dict) -> float:
    """Seconds that earlier, interrupted runs spent on work this run restored.

    NOTE: time spent in an epoch that was interrupted before its backup is not
    counted, so a resumed trial's duration is a lower bound.
    """
    seconds = 0.0
    for phase in record["phases"].values():
        if phase.get("restored"):
            seconds += phase.get("duration_s", 0.0) + phase.get("evaluation_s", 0.0)
        else:
            seconds += phase.get("restored_s", 0.0)
    return seconds


def _completed_record(trial_dir: Path, trial_id: str) -> dict | None:
    """Return the trial's record if it completed and contains the metrics for the oracle."""
    path = trial_dir / RECORD_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("status") != "completed" or record.get("trial_id") != trial_id:
        return None
    metrics = record.get("metrics")
    return record if isinstance(metrics, dict) and metrics else None


def _best_metrics(history: dict) -> dict:
    """Best validation accuracy of a phase, with the same epoch's other metrics."""
    val = history.get("val_accuracy", [])
    finite = [i for i, v in enumerate(val) if math.isfinite(v)]
    if not finite:
        return {"val_accuracy": float("nan")}
    best = max(finite, key=lambda i: val[i])
    return {k: values[best] for k, values in history.items() if best < len(values)}


def _format_values(values: dict) -> str:
    parts = []
    for name, value in values.items():
        parts.append(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}")
    return " ".join(parts)

