"""Run one Keras Tuner project per training-set size and summarise the best trials."""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import logging
import time
from pathlib import Path

import keras
import keras_tuner
import pandas as pd

from study.callbacks import format_duration
from study.hypermodel import TransferHyperModel
from study.precision import DEFAULT_DTYPE_POLICY, DEFAULT_FEATURE_DTYPE
from study.records import build_tables, write_atomic, write_tables
from study.errors import ConfigError, StudyError, TrialFailuresError
from study.search_space import SearchSpace
from study.splits import Splits
from study.tuner import TwoPhaseTuner, make_oracle
from study.weights import ResolvedWeights

logger = logging.getLogger("study.search")

SUMMARY_COLUMNS = [
    "size",
    "trial_id",
    "objective",
    "head_test_accuracy",
    "finetune_test_accuracy",
    "final_train_accuracy",
    "protocol",
]


CONFIG_FILE = "study_config.json"
# Changing any of these makes an existing project a different experiment.
# The weights count by checksum, so the same file in another cache folder matches.
_IDENTITY_KEYS = {
    "search_space_fingerprint": (
        "search space (its file, or an override such as --epochs-head, --epochs-finetune, "
        "--batch-size or --tuner)"
    ),
    "size": "size",
    "seed": "seed",
    "data_sha256": "data file",
    "weights_sha256": "weights",
    "dtype_policy": "--dtype-policy",
}
# Projects created before a key existed ran with this value.
_IDENTITY_DEFAULTS = {"dtype_policy": DEFAULT_DTYPE_POLICY}


def project_dir(results_dir: Path, space: SearchSpace, size: int) -> Path:
    return results_dir / space.name / f"size_{size}"


def check_project(project_dir: Path, config: dict, overwrite: bool) -> None:
    """Refuse to resume a project that was created for another experiment."""
    path = project_dir / CONFIG_FILE
    if overwrite or not path.is_file():
        return
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"project {project_dir} has an unreadable {CONFIG_FILE} ({exc}); "
            "pass --overwrite to start it again"
        ) from exc
    changed = [
        name for key, name in _IDENTITY_KEYS.items()
        if previous.get(key, _IDENTITY_DEFAULTS.get(key))
        != config.get(key, _IDENTITY_DEFAULTS.get(key))
    ]
    if changed:
        raise ConfigError(
            f"project {project_dir} was created with a different "
            f"{', '.join(changed)}; rerun with its settings (see its {CONFIG_FILE}), "
            "pass --overwrite to replace it, or use another --results-dir"
        )


def run_sizes(
    space: SearchSpace,
    splits: dict[int, Splits],
    weights: ResolvedWeights,
    provenance: dict,
    resolved: dict,
    results_dir: Path,
    args: argparse.Namespace,
    data=None,
) -> None:
    """Run or resume the project of every size, then log the best trials.

    With `data` given and `args.feature_cache` set, phase 1 trains the head on
    cached backbone features (see `study.features`).
    """
    hypermodel = TransferHyperModel(
        space, weights, dtype_policy=getattr(args, "dtype_policy", DEFAULT_DTYPE_POLICY)
    )
    feature_cache = None
    if data is not None and getattr(args, "feature_cache", True):
        from study.features import FeatureCache

        feature_cache = FeatureCache(
            data, hypermodel, dtype=getattr(args, "feature_dtype", DEFAULT_FEATURE_DTYPE)
        )
    started = time.monotonic()
    for size, size_splits in splits.items():
        directory = project_dir(results_dir, space, size)
        config = {
            **resolved,
            "size": size,
            "sizes_of_splits": size_splits.sizes(),
            "protocol": size_splits.protocol,
            "weights": weights.describe(),
        }
        check_project(directory, config, args.overwrite)
        oracle = make_oracle(
            space.tuner.oracle,
            space.tuner.max_trials,
            args.seed,
            max_epochs=space.training.epochs_finetune,
            hyperband_factor=space.tuner.hyperband_factor,
            max_consecutive_failures=getattr(args, "max_consecutive_failures", 3),
        )
        # Keras Tuner prints "Reloading Tuner from ..." to stdout; keep stdout for
        # the summary table and send the message to the log.
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            tuner = TwoPhaseTuner(
                hypermodel,
                oracle,
                search_space=space,
                size=size,
                study_seed=args.seed,
                provenance=provenance,
                results_dir=results_dir,
                feature_cache=feature_cache,
                trial_process=getattr(args, "trial_process", "main"),
                directory=str(directory.parent),
                project_name=directory.name,
                overwrite=args.overwrite,
            )
        for line in captured.getvalue().splitlines():
            logger.info("keras_tuner: %s", line)
        write_atomic(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
        logger.info(
            "size=%d: project %s, %s train / %s validation / %s test images (%s protocol)",
            size,
            directory,
            *size_splits.sizes().values(),
            size_splits.protocol,
        )
        if tuner.remaining_trials_or_none() == 0:
            logger.info("size=%d: all trials done already; nothing to run", size)
        _search(tuner, size_splits, directory)
        del tuner
        keras.backend.clear_session()
        gc.collect()

    write_tables(results_dir)
    logger.info("all sizes finished in %s", format_duration(time.monotonic() - started))
    summary = best_trials(results_dir, space.name, list(splits))
    if summary.empty:
        logger.warning("no completed trials in %s", results_dir)
        return
    print(
        f"Best trial per size, search space {space.name} "
        f"(all trials: {results_dir / 'trials.csv'}, epochs: {results_dir / 'epochs.csv'}):"
    )
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def _search(tuner: TwoPhaseTuner, splits: Splits, directory: Path) -> None:
    """Run `tuner.search`, turning the oracle's stop conditions into study errors."""
    try:
        tuner.search(splits=splits, verbose=0)
    except keras_tuner.errors.FatalError as exc:
        if isinstance(exc.__cause__, StudyError):
            raise exc.__cause__ from None
        raise
    except RuntimeError as exc:
        # Keras Tuner 1.4 signals the limit with a plain RuntimeError.
        if "consecutive failures" not in str(exc):
            raise
        raise TrialFailuresError(
            f"size={tuner.size}: search stopped after "
            f"{getattr(tuner.oracle, 'max_consecutive_failed_trials', '?')} failed trials in a row; the last failed with {tuner.last_failure}. Fix the "
            f"cause (see the trial records in {directory}) and rerun the same command, "
            "or raise --max-consecutive-failures"
        ) from None


def best_trials(results_dir: Path, space_name: str, sizes: list[int]) -> pd.DataFrame:
    """Select the best completed trial per size of one search space."""
    trials, _ = build_tables(results_dir)
    if trials.empty:
        return trials
    done = trials[
        (trials["status"] == "completed")
        & (trials["search_space"] == space_name)
        & (trials["size"].isin(sizes))
    ]
    if done.empty:
        return done
    best = done.loc[done.groupby("size")["objective"].idxmax()]
    hp_columns = [c for c in best.columns if c.startswith("hp_")]
    varying = [c for c in hp_columns if done[c].nunique(dropna=False) > 1]
    return best[SUMMARY_COLUMNS + varying].rename(columns={"objective": "val_accuracy"})
