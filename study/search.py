"""Run the two-phase Keras Tuner study for one or more training-set sizes.

    python -m study.search --size 10000 --search-space baseline
    python -m study.search --size 1000 2500 5000 --search-space default --max-trials 5

Each size is its own Keras Tuner project, `<results>/<search space>/size_<N>/`,
so rerunning the same command resumes it, and sizes never share state. The
resolved configuration is logged at start and written to `study_config.json`
in each project. The tidy tables `trials.csv` and `epochs.csv` in the results
folder are rebuilt after every trial.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import signal
import socket
from collections.abc import Sequence
from pathlib import Path

from study import __version__, cli, distributed
from study.errors import ConfigError
from study.precision import (
    DEFAULT_DTYPE_POLICY,
    DEFAULT_FEATURE_DTYPE,
    DTYPE_POLICIES,
    FEATURE_DTYPES,
)
from study.search_space import ORACLES, SearchSpace, continuous_floats, load_search_space

logger = logging.getLogger("study.search")


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} must be an integer >= {minimum}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="python -m study.search",
        description=(
            "Tune ResNet50 transfer learning on CIFAR-10: every trial trains the "
            "head (phase 1) and then fine-tunes the backbone (phase 2)."
        ),
    )

    parser.add_argument(
        "--size", type=positive_int, nargs="+", required=True, metavar="N",
        help="training-set sizes in images, drawn class-balanced from the 50,000-image "
        "pool (required; at least 10, and under the holdout protocol at least 95 at "
        "the default validation fraction 0.1, because the validation images come "
        "out of N)",
    )

    parser.add_argument(
        "--search-space", default="default", metavar="NAME|PATH",
        help="a search space in search_spaces/ by name, or a path to a .toml file "
        "(default: default)",
    )

    parser.add_argument(
        "--tuner", choices=ORACLES, default=None,
        help="oracle (default: the search space's tuner.oracle)",
    )

    parser.add_argument(
        "--max-trials", type=positive_int, default=None, metavar="N",
        help="trials per size (default: the search space's tuner.max_trials; "
        "Hyperband ignores it)",
    )

    parser.add_argument(
        "--epochs-head", type=non_negative_int, default=None, metavar="N",
        help="phase-1 (head) epochs (default: the search space's training.epochs_head)",
    )

    parser.add_argument(
        "--epochs-finetune", type=positive_int, default=None, metavar="N",
        help="phase-2 (fine-tuning) epochs, the Hyperband budget (default: the search "
        "space's training.epochs_finetune)",
    )

    parser.add_argument(
        "--batch-size", type=positive_int, default=None, metavar="N",
        help="images per batch in both phases (default: the search space's "
        "training.batch_size)",
    )

    parser.add_argument(
        "--results-dir", default="results", metavar="DIR",
        help="folder for the Keras Tuner projects and the tidy tables, relative to the "
        "current folder (default: results)",
    )

    parser.add_argument(
        "--seed", type=int, default=0,
        help="study seed: draws the subsets, seeds the oracle, and each trial's seed "
        "derives from it and the trial id (default: 0)",
    )

    parser.add_argument(
        "--overwrite", action="store_true",
        help="delete existing projects of these sizes instead of resuming them",
    )

    parser.add_argument(
        "--max-consecutive-failures", type=positive_int, default=3, metavar="N",
        help="stop a size's search after N failed trials in a row; a failed trial "
        "(diverging loss, out of memory, any other error inside the trial) is "
        "recorded with its reason and the search goes on until then (default: 3)",
    )

    parser.add_argument(
        "--chief", default=None, metavar="[HOST:]PORT",
        help="distributed tuning with Keras Tuner's chief/worker mode: without --worker, "
        "run as the chief and serve the oracle at this address (HOST defaults to "
        "127.0.0.1, reachable from this machine only; use 0.0.0.0 or a host name for "
        "workers elsewhere); with --worker, the chief to connect to. One --size only",
    )

    parser.add_argument(
        "--worker", default=None, metavar="ID",
        help="with --chief: run trials as worker ID; restart a killed worker with the "
        "same ID and it resumes its trial",
    )

    parser.add_argument(
        "--no-feature-cache", dest="feature_cache", action="store_false",
        help="train through the full model instead of on cached backbone outputs: "
        "pooled features in phase 1, and in phase 2 with finetune_depth conv3, conv4 or "
        "conv5 the activations below that stage (slower; the same result up to the "
        "float16 rounding of cached outputs, see --feature-dtype; the cache lives "
        "under ~/.keras/study/features or $STUDY_CACHE/features)",
    )

    parser.add_argument(
        "--feature-dtype", choices=FEATURE_DTYPES, default=DEFAULT_FEATURE_DTYPE,
        help="precision of the cached backbone outputs on disk and in memory: float16 "
        "takes half the space of float32 and, measured on CIFAR-10, gives the head the "
        "same test accuracy within seed noise; float32 keeps every bit. Ignored with "
        f"--no-feature-cache (default: {DEFAULT_FEATURE_DTYPE})",
    )

    parser.add_argument(
        "--dtype-policy", choices=DTYPE_POLICIES, default=DEFAULT_DTYPE_POLICY,
        help="Keras dtype policy of the trained models: mixed_float16 computes in float16 "
        "with float32 weights and loss scaling, for GPUs with float16 units; "
        "mixed_bfloat16 for hardware with bfloat16 units. Their speed on CPUs has not "
        f"been measured (default: {DEFAULT_DTYPE_POLICY})",
    )

    parser.add_argument(
        "--trial-process", choices=("child", "main"), default="child",
        help="where each trial runs: 'child' starts a fresh process per trial, so the "
        "memory TensorFlow keeps for a trial's graphs is returned when it ends (a few "
        "seconds of start-up per trial); 'main' runs trials in this process, whose "
        "memory then grows from trial to trial (default: child)",
    )

    cli.add_input_arguments(parser)
    return parser


def apply_overrides(space: SearchSpace, args: argparse.Namespace) -> SearchSpace:
    training = dataclasses.replace(
        space.training,
        **{
            key: value
            for key, value in (
                ("epochs_head", args.epochs_head),
                ("epochs_finetune", args.epochs_finetune),
                ("batch_size", args.batch_size),
            )
            if value is not None
        },
    )
    tuner = dataclasses.replace(
        space.tuner,
        **{
            key: value
            for key, value in (("oracle", args.tuner), ("max_trials", args.max_trials))
            if value is not None
        },
    )
    continuous = continuous_floats(space.hyperparameters)
    if tuner.oracle == "grid" and continuous:
        raise ConfigError(
            f"search space {space.path}: hyperparameter {continuous[0]} is a "
            "continuous float, which --tuner grid cannot enumerate; "
            "choose another --tuner"
        )
    return dataclasses.replace(space, training=training, tuner=tuner).with_fingerprint()


def check_results_dir(results_dir: Path) -> None:
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        probe = results_dir / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"results folder {results_dir} is not writable ({exc.strerror}); "
            "pass another --results-dir"
        ) from exc


def check_distributed(role: str | None, args: argparse.Namespace) -> None:
    """Reject option combinations that distributed tuning cannot run."""
    if role is None:
        return
    sizes = list(dict.fromkeys(args.size))
    if len(sizes) != 1:
        raise ConfigError(
            f"distributed tuning runs one size per chief; got --size "
            f"{' '.join(map(str, sizes))}. Start one chief and its workers per size"
        )
    if role == "worker" and args.overwrite:
        raise ConfigError(
            "--overwrite on a worker would delete trials that other workers are "
            "running; pass it to the chief only"
        )


def format_config(resolved: dict) -> str:
    """Render the resolved configuration as aligned `key = value` lines."""
    space = resolved["search_space"]
    lines = [f"search_space = {space['name']} ({space['path']})"]
    lines += [f"training.{k} = {v}" for k, v in space["training"].items()]
    lines += [f"tuner.{k} = {v}" for k, v in space["tuner"].items()]
    for name, spec in space["hyperparameters"].items():
        if spec["type"] == "fixed":
            lines.append(f"hp.{name} = {spec['default']}")
        elif spec["type"] == "choice":
            lines.append(f"hp.{name} = choice {list(spec['values'])} (default {spec['default']})")
        else:
            lines.append(
                f"hp.{name} = {spec['type']} [{spec['min']}, {spec['max']}] "
                f"{spec['sampling']} (default {spec['default']})"
            )
    for key in (
        "sizes", "seed", "results_dir", "data", "weights", "keras_backend", "feature_cache",
        "feature_dtype", "dtype_policy", "trial_process", "distributed", "machine",
    ):
        lines.append(f"{key} = {resolved[key]}")
    return "\n".join(f"  {line}" for line in lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)

    space = apply_overrides(load_search_space(args.search_space), args)
    results_dir = Path(args.results_dir)
    check_results_dir(results_dir)
    role = distributed.configure(args.chief, args.worker)
    check_distributed(role, args)

    from study.splits import check_size, make_splits

    for size in args.size:
        check_size(size, space.training.validation_protocol, space.training.validation_fraction)

    import keras

    from study.data import load_cifar10

    data = load_cifar10(args.data)
    splits = {
        size: make_splits(
            data, size, args.seed, space.training.validation_protocol,
            space.training.validation_fraction,
        )
        for size in dict.fromkeys(args.size)
    }

    from study.weights import resolve_weights

    weights = resolve_weights(args.weights)
    provenance = {
        "data_source": data.source,
        "data_kind": data.kind,
        "data_sha256": data.sha256,
        "weights_route": weights.route,
        "weights_sha256": weights.sha256,
    }
    resolved = {
        "study_version": __version__,
        "search_space": space.to_dict(),
        "search_space_fingerprint": space.fingerprint,
        "sizes": list(splits),
        "seed": args.seed,
        "results_dir": str(results_dir),
        "data": data.describe(),
        "weights": weights.describe(),
        "keras_backend": keras.backend.backend(),
        "feature_cache": args.feature_cache,
        "feature_dtype": args.feature_dtype if args.feature_cache else None,
        "dtype_policy": args.dtype_policy,
        "trial_process": args.trial_process,
        "distributed": distributed.describe(),
        "machine": f"{socket.gethostname()} {platform.machine()} {os.cpu_count()} CPUs",
        **provenance,
    }
    logger.info("resolved configuration:\n%s", format_config(resolved))
    if args.dtype_policy != DEFAULT_DTYPE_POLICY and gpu_count(keras.backend.backend()) == 0:
        logger.warning(
            "--dtype-policy %s on a machine without a GPU: mixed precision is meant "
            "for 16-bit units on GPUs, and its speed on CPUs has not been measured",
            args.dtype_policy,
        )

    from study.runner import run_sizes

    if role == "chief":
        logger.info(
            "serving the oracle; start each worker with the same options plus "
            "--chief %s:%s --worker ID",
            os.environ[distributed.ORACLE_IP], os.environ[distributed.ORACLE_PORT],
        )
    # SIGTERM (from `kill` or a batch scheduler) stops the search like Ctrl-C.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        run_sizes(space, splits, weights, provenance, resolved, results_dir, args, data)
    except KeyboardInterrupt:
        logger.warning(
            "search interrupted; rerun the same command to resume: finished trials "
            "are kept and the interrupted trial continues from its last finished epoch"
        )
        raise
    return 0


def gpu_count(backend: str) -> int:
    """Count the GPUs that the Keras `backend` can use."""
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if backend == "torch":
        import torch

        return torch.cuda.device_count()
    if backend == "jax":
        import jax

        return sum(device.platform == "gpu" for device in jax.devices())
    return 0


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    raise SystemExit(cli.run_main(main))
