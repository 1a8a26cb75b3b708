"""A Keras Tuner `Tuner` whose every trial runs both transfer-learning phases.

The oracle side lives here: creating the oracle, handing each trial to a
`study.trial.TrialRunner`, reporting its metrics and rebuilding the tidy
tables after each trial. The objective is the best `val_accuracy` of phase 2
(direction max); `study.trial` describes the phases.

A custom `run_trial` loses what `keras_tuner.Tuner.run_trial` does by default,
so `TrialRunner` does it explicitly: it clears the Keras session before each
build, checkpoints the best phase-2 epoch (so `get_best_models()` works), logs
TensorBoard HParams on the TensorFlow backend, and guards each fit with
`TerminateOnNaN` and per-phase early stopping.

With `trial_process="child"` every trial runs in a process of its own
(`study.trial_process`), so the memory TensorFlow keeps for each trial's
graphs is returned when the trial ends.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import keras_tuner

from study.callbacks import format_duration
from study.precision import global_dtype_policy
from study.records import write_tables
from study.search_space import SearchSpace
from study.trial import CHECKPOINT_FILE, OBJECTIVE, TrialRunner
from study.trial_process import TrialProcessError, run_in_child

logger = logging.getLogger("study.tuner")

TRIAL_PROCESSES = ("main", "child")


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
        trial_process: `main` runs each trial in this process; `child` runs
            each in a new process, which bounds memory over a long search.
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
        trial_process: str = "main",
        **kwargs,
    ):
        if trial_process not in TRIAL_PROCESSES:
            raise ValueError(
                f"trial_process={trial_process!r}; use one of {', '.join(TRIAL_PROCESSES)}"
            )
        self.trial_process = trial_process
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

    def runner(self) -> TrialRunner:
        """Return the picklable part of this tuner that runs one trial."""
        return TrialRunner(
            hypermodel=self.hypermodel,
            search_space=self.search_space,
            size=self.size,
            study_seed=self.study_seed,
            project_dir=Path(self.project_dir),
            tuner_id=self.tuner_id,
            max_trials=self.oracle.max_trials,
            provenance=self.provenance,
            feature_cache=self.feature_cache,
            process=self.trial_process,
        )

    def run_trial(self, trial, splits, verbose: int = 0, **kwargs):
        runner = self.runner()
        try:
            if self.trial_process == "child":
                record = run_in_child(
                    runner.run, trial.trial_id, trial.hyperparameters, splits, verbose
                )
            else:
                record = runner.run(trial.trial_id, trial.hyperparameters, splits, verbose)
        except TrialProcessError as exc:
            # The child could not write how its trial ended.
            runner.mark_ended(trial.trial_id, "failed", exc.reason)
            self.last_failure = exc.reason
            logger.error("%s failed: %s", runner.label(trial.trial_id), exc.reason)
            raise
        except Exception as exc:
            self.last_failure = f"{type(exc).__name__}: {exc}"
            raise
        except BaseException as exc:
            runner.mark_ended(trial.trial_id, "interrupted", f"{type(exc).__name__}: {exc}")
            raise
        self._trial_seconds.append(record["duration_s"])
        return record["metrics"]

    def load_model(self, trial):
        """Build the trial's model and load its best phase-2 checkpoint."""
        runner = self.runner()
        with global_dtype_policy(runner.dtype_policy):
            model = runner.build_model(trial.hyperparameters)
        model.load_weights(str(Path(self.get_trial_dir(trial.trial_id)) / CHECKPOINT_FILE))
        return model
