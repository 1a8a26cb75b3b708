"""Keras callbacks of a trial: progress log lines, and the state that survives a kill.

`ProgressLog` writes the fixed-format epoch lines. `EpochHistoryFile`,
`PhaseBackup` and `BestEpochCheckpoint` keep a phase's history, its
resumable weights and its best epoch on disk, so an interrupted trial resumes
where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

import keras

from study.records import write_atomic

logger = logging.getLogger("study.progress")

_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressLog(keras.callbacks.Callback):
    """Log one line per epoch, with an estimate of the time left in the trial.

    Example line:
        trial 3/10 size=10000 phase=2 epoch 4/10 loss 0.812 accuracy 0.741
        val_loss 0.903 val_accuracy 0.734 (41s/epoch, trial left ~4m07s)

    Args:
        label: the prefix, e.g. `trial 3/10 size=10000`.
        phase: 1 (head) or 2 (fine-tuning).
        epochs: epochs planned for this phase.
        later_epoch_seconds: a callable returning the estimated seconds of the
            trial's remaining phases after this one.
    """

    def __init__(self, label: str, phase: int, epochs: int, later_epoch_seconds=None):
        super().__init__()
        self.label = label
        self.phase = phase
        self.epochs = epochs
        self.later_epoch_seconds = later_epoch_seconds or (lambda seconds_per_epoch: 0.0)
        self.epoch_seconds: list[float] = []
        self._epoch_start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.epoch_seconds.append(time.monotonic() - self._epoch_start)
        per_epoch = sum(self.epoch_seconds) / len(self.epoch_seconds)
        left = per_epoch * (self.epochs - epoch - 1) + self.later_epoch_seconds(per_epoch)
        metrics = " ".join(f"{k} {logs[k]:.3f}" for k in _METRICS if k in logs)
        logger.info(
            "%s phase=%d epoch %d/%d %s (%s/epoch, trial left ~%s)",
            self.label,
            self.phase,
            epoch + 1,
            self.epochs,
            metrics,
            format_duration(per_epoch),
            format_duration(left),
        )


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
