"""One trial of the study: head training, then fine-tuning, with its record.

`TrialRunner` contains everything a trial needs and nothing of the oracle, so it
can be pickled and run in a child process (`study.trial_process`) as well as
in the search's own process. Its `run` method:

1. writes the trial record with status `running`;
2. trains the head (phase 1) with the backbone frozen, on cached backbone
   features when the feature cache allows it, and keeps the result in the
   trial's `resume/` folder so that a killed trial does not repeat it;
3. unfreezes the backbone per `finetune_depth` and `bn_policy`, recompiles
   with `learning_rate_finetune` and fine-tunes (phase 2), on cached
   activations below the fine-tuned stages when possible, checkpointing the
   best epoch;
4. evaluates each phase on the test set (for the report only: the oracle
   never sees these figures) and writes the test-set predictions of the best
   checkpoint;
5. writes the record with status `completed`, `failed` or `interrupted`.

Under Hyperband the oracle's epoch budget (`tuner/epochs`) applies to phase 2.
A trial that continues an earlier Hyperband trial (`tuner/trial_id`) loads that
trial's best checkpoint and skips phase 1.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import math
import os
import resource
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import keras
import keras_tuner
import numpy as np

from study.callbacks import (
    BestEpochCheckpoint,
    EpochHistoryFile,
    PhaseBackup,
    ProgressLog,
    format_duration,
)
from study.errors import StudyError
from study.features import CUT, CUT_BELOW_STAGE
from study.hypermodel import compile_model, head_model, unfreeze_backbone, upper_model
from study.precision import DEFAULT_DTYPE_POLICY, global_dtype_policy
from study.records import RECORD_FILE, write_atomic, write_record
from study.search_space import SearchSpace
from study.splits import Splits
from study.streaming import FeatureBatches, in_memory_limit_bytes

logger = logging.getLogger("study.trial")

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
# Batches per call into the compiled train function for models on cached
# inputs (see `compile_model`); measured in benchmarks/throughput.py.
CACHED_STEPS_PER_EXECUTION = 16


def trial_seed(study_seed: int, trial_id: str) -> int:
    """Seed for one trial's weights and shuffling, derived from the study seed."""
    digest = hashlib.sha256(f"{study_seed}:{trial_id}".encode()).hexdigest()
    return int(digest[:8], 16) % (2**31 - 1)


@dataclasses.dataclass(frozen=True)
class PhaseData:
    """Inputs and labels of one phase: images, or cached backbone features.

    With `streamed` set, the inputs are `study.streaming.FeatureRows` that are
    read batch by batch from the cache instead of arrays in memory.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    streamed: bool = False

    @classmethod
    def from_splits(cls, splits: Splits) -> PhaseData:
        return cls(
            splits.x_train, splits.y_train, splits.x_val, splits.y_val,
            splits.x_test, splits.y_test,
        )


@dataclasses.dataclass
class TrialRunner:
    """Runs both phases of one trial and writes its record.

    Attributes:
        hypermodel: a `study.hypermodel.TransferHyperModel`.
        search_space: the parsed search space (training settings).
        size: training-set size of the project.
        study_seed: seed from which each trial's seed is derived.
        project_dir: the Keras Tuner project folder; trial `N` lives in
            `trial_N/` below it.
        tuner_id: the tuner that runs the trial (`tuner0` unless distributed).
        max_trials: the oracle's trial budget, for log lines; None if unknown.
        provenance: fields copied into every record (data and weights source
            and checksums).
        feature_cache: a `study.features.FeatureCache`, or None to train the
            full model in both phases.
        process: where the trial runs, `main` or `child`; stored in the record.
    """

    hypermodel: keras_tuner.HyperModel
    search_space: SearchSpace
    size: int
    study_seed: int
    project_dir: Path
    tuner_id: str = "tuner0"
    max_trials: int | None = None
    provenance: dict = dataclasses.field(default_factory=dict)
    feature_cache: object = None
    process: str = "main"

    def trial_dir(self, trial_id: str) -> Path:
        path = Path(self.project_dir) / f"trial_{trial_id}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def label(self, trial_id: str) -> str:
        """Return the prefix of the trial's log lines, e.g. `trial 3/10 size=10000`."""
        try:
            number = int(trial_id) + 1
        except ValueError:
            number = trial_id
        return f"trial {number}/{self.max_trials or '?'} size={self.size}"

    def run(self, trial_id: str, hp, splits: Splits, verbose: int = 0) -> dict:
        """Run the trial and return its completed record.

        The record's `metrics` are what the oracle receives. A failure writes
        the record with status `failed` and raises: `FailedTrialError` for a
        diverged loss, `FatalError` for a configuration error (which fails
        every trial alike), and the original exception otherwise.
        """
        training = self.search_space.training
        seed = trial_seed(self.study_seed, trial_id)
        keras.utils.set_random_seed(seed)
        trial_dir = self.trial_dir(trial_id)
        label = self.label(trial_id)

        epochs_head = training.epochs_head
        epochs_finetune = hp.values.get("tuner/epochs", training.epochs_finetune)
        initial_epoch = hp.values.get("tuner/initial_epoch", 0)
        continues = hp.values.get("tuner/trial_id")
        if continues:
            epochs_head = 0

        finished = _completed_record(trial_dir, trial_id)
        if finished is not None:
            # Killed after the record was written but before the oracle heard
            # of it: report the stored result instead of training again.
            logger.info("%s completed before the interruption; using its record", label)
            return finished

        record = {
            "search_space": self.search_space.name,
            "search_space_fingerprint": self.search_space.fingerprint,
            "size": self.size,
            "protocol": splits.protocol,
            "trial_id": trial_id,
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
            "process": self.process,
            "dtype_policy": self.dtype_policy,
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **self.provenance,
        }
        write_record(trial_dir, record)
        started = time.monotonic()
        logger.info("%s start %s", label, format_values(record["hyperparameters"]))
        try:
            # Models that the trial builds from the hypermodel's layers (the
            # head, the upper stages) get the same policy, loss scaling included.
            with global_dtype_policy(self.dtype_policy):
                metrics = self._run_phases(
                    trial_id, hp, splits, record, label, epochs_head, epochs_finetune,
                    initial_epoch, continues, verbose,
                )
        except BaseException as exc:
            status = "failed" if isinstance(exc, Exception) else "interrupted"
            record.update(
                status=status,
                reason=f"{type(exc).__name__}: {exc}",
                duration_s=time.monotonic() - started,
                peak_rss_mib=peak_rss_mib(),
            )
            write_record(trial_dir, record)
            logger.error(
                "%s %s: %s (%s)", label, status, record["reason"],
                format_values(record["hyperparameters"]),
            )
            if status == "interrupted":
                raise
            shutil.rmtree(trial_dir / RESUME_DIR, ignore_errors=True)
            if isinstance(exc, StudyError):
                raise keras_tuner.errors.FatalError(str(exc)) from exc
            raise
        finally:
            gc.collect()
        record.update(
            status="completed",
            objective=metrics[OBJECTIVE.name],
            metrics=metrics,
            duration_s=time.monotonic() - started + _restored_seconds(record),
            peak_rss_mib=peak_rss_mib(),
        )
        write_record(trial_dir, record)
        shutil.rmtree(trial_dir / RESUME_DIR, ignore_errors=True)
        logger.info(
            "%s done in %s: val_accuracy %.4f, test_accuracy %.4f (head %.4f)",
            label,
            format_duration(record["duration_s"]),
            metrics[OBJECTIVE.name],
            record["phases"]["finetune"]["test_accuracy"],
            record["phases"].get("head", {}).get("test_accuracy", float("nan")),
        )
        return record

    @property
    def dtype_policy(self) -> str:
        """The Keras dtype policy of the hypermodel, `float32` for one that sets none."""
        return getattr(self.hypermodel, "dtype_policy", DEFAULT_DTYPE_POLICY)

    def mark_ended(self, trial_id: str, status: str, reason: str) -> None:
        """Set the status of a trial whose process could not write it itself.

        Used when a child process was killed: its record is still `running`.
        A record that already states how the trial ended is left as it is.
        """
        path = self.trial_dir(trial_id) / RECORD_FILE
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        if record.get("status") != "running":
            return
        record.update(status=status, reason=reason)
        write_record(path.parent, record)
        if status == "failed":
            shutil.rmtree(path.parent / RESUME_DIR, ignore_errors=True)

    # -- the phases -------------------------------------------------------

    def build_model(self, hp) -> keras.Model:
        """Build the trial's model after clearing what earlier trials left in Keras."""
        # Drop what earlier trials of this process left in the Keras session.
        keras.backend.clear_session()
        gc.collect()
        # clear_session() also resets the global dtype policy.
        keras.config.set_dtype_policy(self.dtype_policy)
        model = self.hypermodel.build(hp)
        if not isinstance(model, keras.Model):
            raise keras_tuner.errors.FatalTypeError(
                f"the hypermodel returned {type(model).__name__}, not a keras.Model"
            )
        return model

    def _run_phases(
        self, trial_id, hp, splits, record, label, epochs_head, epochs_finetune,
        initial_epoch, continues, verbose,
    ) -> dict:
        training = self.search_space.training
        trial_dir = self.trial_dir(trial_id)
        resume = trial_dir / RESUME_DIR
        images = PhaseData.from_splits(splits)
        model = self.build_model(hp)

        def finetune_estimate(seconds_per_epoch):
            # Fine-tuning trains the whole backbone: roughly 5x a head epoch on
            # CPU. The figure is only an estimate until phase 2 starts.
            return 5 * seconds_per_epoch * (epochs_finetune - initial_epoch)

        metrics = {}
        if epochs_head > 0:
            head = self._run_head_phase(
                model, trial_id, hp, splits, images, label, epochs_head, resume,
                verbose, finetune_estimate,
            )
            record["phases"]["head"] = head
            write_record(trial_dir, record)
            metrics.update(
                {f"head_{k}": v for k, v in best_metrics(head["history"]).items()}
            )

        unfreeze_backbone(model, hp.get("finetune_depth"), hp.get("bn_policy"))
        compile_model(model, training.optimizer, hp.get("learning_rate_finetune"))
        if continues:
            # NOTE: no test or real run has reached this Hyperband branch yet.
            model.load_weights(str(self.trial_dir(continues) / CHECKPOINT_FILE))
            logger.info("%s continues trial %s from its best checkpoint", label, continues)
        progress = ProgressLog(label, 2, epochs_finetune)
        checkpoint = trial_dir / CHECKPOINT_FILE
        activations, why_not = self._finetune_activations(hp, splits)
        if activations is not None:
            cut = CUT_BELOW_STAGE[hp.get("finetune_depth")]
            upper = upper_model(model, cut)
            compile_model(upper, training.optimizer, hp.get("learning_rate_finetune"),
                          CACHED_STEPS_PER_EXECUTION)
            logger.info(
                "%s phase=2 trains from %s up on cached %s activations (%s)",
                label, hp.get("finetune_depth"), cut, self.feature_cache.dtype,
            )
            finetune = self._fit_phase(
                upper, activations, trial_id, hp, 2, epochs_finetune, initial_epoch,
                progress, verbose, resume / "phase_2_cached_activations",
                checkpoint=checkpoint, checkpoint_model=model,
            )
            finetune["path"] = "cached_activations"
            finetune["feature_dtype"] = self.feature_cache.dtype
        else:
            logger.info("%s phase=2 trains the full model (%s)", label, why_not)
            finetune = self._fit_phase(
                model, images, trial_id, hp, 2, epochs_finetune, initial_epoch,
                progress, verbose, resume / "phase_2_full_model", checkpoint=checkpoint,
            )
            finetune["path"] = "full_model"
        record["phases"]["finetune"] = finetune
        metrics.update(best_metrics(finetune["history"]))
        record["predictions"] = _write_predictions(
            model, checkpoint, images, trial_dir / PREDICTIONS_FILE, finetune["history"]
        )
        del model
        return metrics

    def _run_head_phase(
        self, model, trial_id, hp, splits, images, label, epochs, resume, verbose,
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
        features, why_not = self._cached_inputs(hp, splits, CUT)
        if features is not None:
            head_net = head_model(model)
            compile_model(head_net, self.search_space.training.optimizer,
                          hp.get("learning_rate_head"), CACHED_STEPS_PER_EXECUTION)
            logger.info("%s phase=1 trains the head on cached backbone features (%s)",
                        label, self.feature_cache.dtype)
            head = self._fit_phase(
                head_net, features, trial_id, hp, 1, epochs, 0, progress, verbose,
                resume / "phase_1_cached_features",
            )
            head["path"] = "cached_features"
            head["feature_dtype"] = self.feature_cache.dtype
        else:
            logger.info("%s phase=1 trains the full model with the backbone frozen (%s)",
                        label, why_not)
            head = self._fit_phase(
                model, images, trial_id, hp, 1, epochs, 0, progress, verbose,
                resume / "phase_1_full_model",
            )
            head["path"] = "full_model"
        # Keras wants the .weights.h5 suffix, so the temporary name keeps it.
        temporary = resume / f".phase_1.{os.getpid()}.weights.h5"
        model.save_weights(str(temporary))
        os.replace(temporary, weights_path)
        write_atomic(done_path, json.dumps(head))
        return head

    def _finetune_activations(self, hp, splits) -> tuple[PhaseData | None, str]:
        """Return cached activations below the fine-tuned stages, or None and the reason."""
        depth = hp.get("finetune_depth")
        if depth not in CUT_BELOW_STAGE:
            return None, f"finetune_depth={depth} leaves no frozen part to cache"
        return self._cached_inputs(hp, splits, CUT_BELOW_STAGE[depth])

    def _cached_inputs(self, hp, splits, cut: str) -> tuple[PhaseData | None, str]:
        """Return the cached output of layer `cut` for the splits, or None and the reason."""
        if self.feature_cache is None:
            return None, "feature cache off"
        reason = self.feature_cache.unavailable_reason()
        if reason:
            return None, reason
        cached = self.feature_cache.get(hp.get("preprocessing"), hp.get("image_size"), cut)
        rows = cached.rows_for_splits(splits)
        needed = sum(r.nbytes for r in rows)
        limit = in_memory_limit_bytes()
        streamed = needed > limit
        if streamed:
            logger.info(
                "features: %s for this size take %.0f MiB, over the %.0f MiB kept in "
                "memory; streaming batches from %s", cut, needed / 2**20, limit / 2**20,
                self.feature_cache.directory / cached.key,
            )
            x_train, x_val, x_test = rows
        else:
            x_train, x_val, x_test = cached.for_splits(splits)
        data = PhaseData(
            x_train, splits.y_train, x_val, splits.y_val, x_test, splits.y_test, streamed
        )
        return data, ""

    def _fit_phase(
        self, model, data: PhaseData, trial_id, hp, phase, epochs, initial_epoch, progress,
        verbose, resume_dir: Path, checkpoint: Path | None = None, checkpoint_model=None,
    ) -> dict:
        """Fit one phase, resuming from `resume_dir`, then evaluate on the test set.

        `checkpoint_model` is the model whose weights the best-epoch checkpoint
        saves, when `model` shares only part of its layers.
        """
        training = self.search_space.training
        label = self.label(trial_id)
        history_file = EpochHistoryFile(resume_dir / "history.json", initial_epoch)
        done = len(history_file.history.get("loss", []))
        restored_seconds = history_file.restored_seconds
        if done:
            logger.info(
                "%s phase=%d resumes after epoch %d/%d from %s",
                label, phase, initial_epoch + done, epochs, resume_dir,
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
        callbacks += self._tensorboard_callbacks(trial_id, hp, phase)

        evaluation_batch_size = max(training.batch_size, EVALUATION_BATCH_SIZE)
        if data.streamed:
            seed = trial_seed(self.study_seed, trial_id) + phase
            inputs = {"x": FeatureBatches(data.x_train, data.y_train, training.batch_size,
                                          shuffle=True, seed=seed)}
            validation = FeatureBatches(data.x_val, data.y_val, evaluation_batch_size)
            test = {"x": FeatureBatches(data.x_test, data.y_test, evaluation_batch_size)}
        else:
            inputs = {"x": data.x_train, "y": data.y_train, "batch_size": training.batch_size,
                      "shuffle": True, "validation_batch_size": evaluation_batch_size}
            validation = (data.x_val, data.y_val)
            test = {"x": data.x_test, "y": data.y_test, "batch_size": evaluation_batch_size}

        started = time.monotonic()
        model.fit(
            **inputs,
            validation_data=validation,
            epochs=epochs,
            initial_epoch=initial_epoch,
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
        test_loss, test_accuracy = model.evaluate(**test, verbose=0)
        logger.info(
            "%s phase=%d test_loss %.3f test_accuracy %.4f (report only)",
            label, phase, test_loss, test_accuracy,
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
            "streamed": data.streamed,
        }

    def _tensorboard_callbacks(self, trial_id, hp, phase: int) -> list:
        if keras.backend.backend() != "tensorflow":
            logger.debug(
                "TensorBoard logs and HParams need the TensorFlow backend; skipped on %s",
                keras.backend.backend(),
            )
            return []
        from tensorboard.plugins.hparams import api as hparams_api

        log_dir = str(
            Path(self.project_dir) / "tensorboard" / f"trial_{trial_id}" / f"phase_{phase}"
        )
        hparams = {k: v for k, v in hp.values.items() if not k.startswith("tuner/")}
        return [
            keras.callbacks.TensorBoard(log_dir=log_dir),
            hparams_api.KerasCallback(log_dir, hparams, trial_id=trial_id),
        ]


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _first_non_finite(history: dict) -> tuple[int, float] | None:
    for epoch, value in enumerate(history.get("loss", [])):
        if not math.isfinite(value):
            return epoch, value
    return None


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
    best = best_metrics(history)
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


def best_metrics(history: dict) -> dict:
    """Best validation accuracy of a phase, with the same epoch's other metrics."""
    val = history.get(OBJECTIVE.name, [])
    finite = [i for i, v in enumerate(val) if math.isfinite(v)]
    if not finite:
        return {OBJECTIVE.name: float("nan")}
    best = max(finite, key=lambda i: val[i])
    return {k: values[best] for k, values in history.items() if best < len(values)}


def format_values(values: dict) -> str:
    """`name=value` pairs for log lines, floats to three significant digits."""
    parts = []
    for name, value in values.items():
        parts.append(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}")
    return " ".join(parts)
