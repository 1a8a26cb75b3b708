"""Keras callbacks for trial progress: fixed-format log lines and a time estimate."""

from __future__ import annotations

import logging
import math
import time

import keras

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
