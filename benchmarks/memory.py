"""Measure resident memory from trial to trial of a search on small synthetic data.

    python benchmarks/memory.py [--trials 12] [--size 200] [--trial-process child|main]

Runs a random search with the study's `TwoPhaseTuner` (random backbone
weights, one epoch per phase, fine-tuning from conv5) and prints, after every
trial, the resident set size of the search's process and the trial's peak
(from its record). Then it prints the growth of both from trial 2 to the last
trial. Trial 1 is excluded because it pays one-off costs: TensorFlow's graph
and kernel caches and the first model build. The target is under 10 %.

With `--trial-process child` (the default of `python -m study.search`) each
trial runs in a process of its own; with `main` all trials share the search's
process, which shows the growth that the child process avoids.

Resident memory is read from /proc/self/status, so the script runs on Linux.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

logger = logging.getLogger("benchmark")


def resident_mib() -> float:
    """Current resident set size of this process in MiB (Linux only)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def synthetic_data(size: int, seed: int = 0):
    """Build a CIFAR-10 stand-in with learnable classes: a noisy pattern per class."""
    from study.data import IMAGE_SHAPE, NUM_CLASSES, Cifar10

    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 256, size=(NUM_CLASSES, *IMAGE_SHAPE), dtype=np.uint8)

    def images(labels):
        noise = rng.integers(0, 32, size=(len(labels), *IMAGE_SHAPE), dtype=np.uint8)
        return patterns[labels] // 2 + noise

    y_train = (np.arange(size) % NUM_CLASSES).astype(np.uint8)
    y_test = (np.arange(100) % NUM_CLASSES).astype(np.uint8)
    return Cifar10(
        x_train=images(y_train), y_train=y_train, x_test=images(y_test), y_test=y_test,
        source="synthetic", kind="npz", sha256="0" * 64,
    )


SPACE = """
name = "memory"
description = "small trials for the memory benchmark"

[training]
epochs_head = 1
epochs_finetune = 1
batch_size = 20
validation_protocol = "holdout"
validation_fraction = 0.2

[tuner]
oracle = "random"
max_trials = {trials}

[hyperparameters]
units_1 = {{ type = "choice", values = [32, 64, 128, 256], default = 64 }}
units_2 = {{ type = "choice", values = [16, 32, 64], default = 32 }}
learning_rate_head = {{ type = "float", min = 1e-4, max = 1e-2, sampling = "log" }}
learning_rate_finetune = 1e-5
finetune_depth = "conv5"
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/memory.py",
        description="Resident memory after each trial of a small random search.",
    )
    parser.add_argument("--trials", type=int, default=12, help="trials to run (default: 12)")
    parser.add_argument("--size", type=int, default=200,
                        help="training-set size in images (default: 200)")
    parser.add_argument("--trial-process", choices=("child", "main"), default="child",
                        help="where each trial runs (default: child)")
    args = parser.parse_args(argv)
    if args.trials < 3:
        parser.error("--trials must be at least 3")
    logging.basicConfig(level=logging.WARNING)

    from study.hypermodel import TransferHyperModel
    from study.records import RECORD_FILE
    from study.search_space import load_search_space
    from study.splits import make_splits
    from study.tuner import TwoPhaseTuner, make_oracle
    from study.weights import resolve_weights

    folder = Path(tempfile.mkdtemp(prefix="study-memory-"))
    space_file = folder / "memory.toml"
    space_file.write_text(SPACE.format(trials=args.trials))
    space = load_search_space(str(space_file))
    data = synthetic_data(args.size)
    splits = make_splits(data, args.size, 0, "holdout", 0.2)
    readings: list[float] = []
    peaks: list[float] = []

    class MeasuredTuner(TwoPhaseTuner):
        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            record = json.loads(
                (Path(self.get_trial_dir(trial.trial_id)) / RECORD_FILE).read_text()
            )
            readings.append(resident_mib())
            peaks.append(record.get("peak_rss_mib", float("nan")))
            print(f"trial {len(readings):2d}: search process {readings[-1]:7.0f} MiB resident, "
                  f"trial peak {peaks[-1]:7.0f} MiB ({record['status']})", flush=True)

    tuner = MeasuredTuner(
        TransferHyperModel(space, resolve_weights("none")),
        make_oracle("random", args.trials, 0, max_epochs=1),
        search_space=space, size=args.size, study_seed=0,
        directory=str(folder), project_name="memory", trial_process=args.trial_process,
    )
    started = time.perf_counter()
    print(f"machine: {platform.node()} {platform.machine()}; trials in the {args.trial_process} "
          f"process; before the search: {resident_mib():.0f} MiB resident")
    tuner.search(splits=splits, verbose=0)
    wall = time.perf_counter() - started

    print(f"{len(readings)} trials in {wall:.0f} s")
    for name, values in (("search process", readings), ("trial peak", peaks)):
        growth = (values[-1] - values[1]) / values[1]
        print(f"{name} growth from trial 2 to trial {len(values)}: {growth:+.1%} "
              f"({values[1]:.0f} -> {values[-1]:.0f} MiB; target under +10 %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
