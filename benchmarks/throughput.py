"""Measure what the feature cache saves, in one run on one machine.

    python benchmarks/throughput.py --data /path/to/cifar10.npz [--size 10000]

Prints one table of measured seconds and the ratios between them:

- the fp32 matrix-multiply peak of this machine, and the backbone's inference
  throughput as a fraction of it (ResNet50 FLOPs counted from its layers);
- phase 1 per trial: the full model with a frozen backbone vs the head on
  cached pooled features, with one and with several steps per call into the
  train function, and streamed from the memory-mapped cache file;
- the head's test accuracy on float32 features vs the same features rounded
  to float16 (as the cache stores them by default), over a few seeds;
- phase 2 per epoch: fine-tuning the whole backbone vs `conv5` and the head on
  cached `conv4` activations, with one and with several steps per call;
- one whole trial: the naive two-phase loop vs the fastest valid path, with
  and without the one-off cache pass;
- peak resident memory of the process;
- the arithmetic behind the ratios: convolution and dense FLOPs per epoch of
  each path (backward passes counted as twice the forward pass of the layers
  that train), so each ratio splits into the work saved and the rate at
  which each path runs.

Full-model epochs are expensive on a CPU, so each phase runs two epochs: the
first, which includes tracing the train function, and a second one, measured
alone. A phase of E epochs counts as the first epoch plus E - 1 times the
second. Cached phase 1 runs in full. The cache lives where the study keeps it
(`~/.keras/study/features` or `$STUDY_CACHE/features`); `--fresh-cache`
computes the entries again in a new folder, and the table states whether each
cache pass ran or only loaded an existing entry.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from study import cli  # noqa: E402

logger = logging.getLogger("benchmark")


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best fp32 matrix-multiply rate of the Keras backend, in GFLOP/s."""
    from keras import ops

    a = ops.convert_to_tensor(np.random.default_rng(0).random((n, n), dtype=np.float32))
    b = ops.convert_to_tensor(np.random.default_rng(1).random((n, n), dtype=np.float32))
    np.asarray(ops.matmul(a, b))
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        np.asarray(ops.matmul(a, b))
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def model_gflops_per_image(model, training: bool = False) -> float:
    """Convolution and dense FLOPs of `model` per image, in GFLOP.

    With `training`, a layer with trainable weights counts three times its
    forward FLOPs (forward, gradient of the input, gradient of the weights).
    A frozen layer counts its forward pass only, which assumes that no
    trainable layer lies below a frozen one, as in every model here. The
    lowest trainable layer is counted with an input gradient it does not need.
    """
    import keras

    flops = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, channels_out = layer.output.shape
            kernel_h, kernel_w = layer.kernel_size
            channels_in = layer.input.shape[-1]
            forward = 2 * height * width * kernel_h * kernel_w * channels_in * channels_out
        elif isinstance(layer, keras.layers.Dense):
            forward = 2 * layer.input.shape[-1] * layer.units
        else:
            continue
        flops += forward * (3 if training and layer.trainable_weights else 1)
    return flops / 1e9


def epoch_gflops(model, n_train: int, n_val: int) -> float:
    """FLOPs of one epoch of `model`: training on `n_train` images, validating on `n_val`."""
    return (
        n_train * model_gflops_per_image(model, training=True)
        + n_val * model_gflops_per_image(model)
    )


def _all_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)
        else:
            yield layer


class LoggedResults(dict):
    """Measured values that are also logged as they come, so a cut-short run keeps them."""

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        logger.info("measured %s = %s", key, value)


def timed(function):
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def epoch_seconds(model, x, y, x_val, y_val, batch_size: int) -> tuple[float, float]:
    """Seconds of the first epoch (tracing included) and of a second one."""
    fit = lambda: model.fit(  # noqa: E731
        x, y, validation_data=(x_val, y_val), epochs=1, batch_size=batch_size,
        validation_batch_size=256, verbose=0,
    )
    first, _ = timed(fit)
    second, _ = timed(fit)
    return first, second


def phase_seconds(first: float, later: float, epochs: int) -> float:
    """Seconds of a phase of `epochs` epochs: the first epoch and `epochs - 1` later ones."""
    return first + (epochs - 1) * later


def run(args) -> dict:
    import keras

    from study.data import load_cifar10
    from study.features import CUT_BELOW_STAGE, FeatureCache, feature_key
    from study.hypermodel import (
        TransferHyperModel,
        build_model,
        compile_model,
        feature_extractor,
        freeze_backbone,
        head_model,
        unfreeze_backbone,
        upper_model,
    )
    from study.search_space import load_search_space
    from study.splits import make_splits
    from study.streaming import FeatureBatches
    from study.trial import CACHED_STEPS_PER_EXECUTION as STEPS
    from study.weights import resolve_weights

    data = load_cifar10(args.data)
    splits = make_splits(data, args.size, 0, "holdout", 0.1)
    n_train, n_val = len(splits.y_train), len(splits.y_val)
    space = load_search_space("default")
    weights = resolve_weights(args.weights)
    hypermodel = TransferHyperModel(space, weights)
    cache_dir = Path(tempfile.mkdtemp(prefix="study-benchmark-")) if args.fresh_cache else None
    cache = FeatureCache(data, hypermodel, cache_dir)
    values = {
        **{h.name: h.default for h in space.hyperparameters},
        "preprocessing": "caffe",
        "image_size": args.image_size,
        "dropout": 0.0,
        "l2": 0.0,
    }
    batch = args.batch_size
    epochs_head, epochs_finetune = args.epochs_head, args.epochs_finetune
    results = LoggedResults()
    results["steps_per_execution"] = STEPS
    results["feature_dtype"] = cache.dtype

    logger.info("matmul peak")
    results["matmul_peak_gflops"] = matmul_peak_gflops()

    logger.info("backbone inference throughput")
    extractor = feature_extractor(
        hypermodel.make_backbone(args.image_size), "caffe", args.image_size
    )
    sample = data.x_train[:2048]
    extractor.predict(sample[:256], batch_size=256, verbose=0)
    seconds, _ = timed(lambda: extractor.predict(sample, batch_size=256, verbose=0))
    results["inference_images_per_s"] = len(sample) / seconds
    results["backbone_gflops_per_image"] = model_gflops_per_image(extractor)
    results["inference_fraction_of_peak"] = (
        results["inference_images_per_s"] * results["backbone_gflops_per_image"]
        / results["matmul_peak_gflops"]
    )

    logger.info("cache passes (pooled features and conv4 activations)")
    cut = CUT_BELOW_STAGE["conv5"]
    for name, layer in (("pool", "pool"), ("conv4", cut)):
        key = feature_key(
            data.sha256, weights.sha256, "caffe", args.image_size, layer, cache.dtype
        )
        results[f"cache_{name}_built"] = not (cache.directory / key / "meta.json").is_file()
        results[f"cache_{name}_s"], _ = timed(lambda: cache.get("caffe", args.image_size, layer))
    features = cache.get("caffe", args.image_size)
    activations = cache.get("caffe", args.image_size, cut)

    logger.info("phase 1, full model with frozen backbone: two epochs")
    model = build_model(values, hypermodel.make_backbone(args.image_size))
    freeze_backbone(model)
    compile_model(model, "adam", 1e-3)
    results["phase1_naive_gflops_per_epoch"] = epoch_gflops(model, n_train, n_val)
    first, later = epoch_seconds(
        model, splits.x_train, splits.y_train, splits.x_val, splits.y_val, batch
    )
    results["phase1_naive_first_epoch_s"] = first
    results["phase1_naive_epoch_s"] = later
    results["phase1_naive_trial_s"] = phase_seconds(first, later, epochs_head)

    logger.info("phase 1, head on cached features: %d epochs", epochs_head)
    x_train, x_val, x_test = features.for_splits(splits)
    head_weights = head_model(model).get_weights()
    results["phase1_cached_gflops_per_epoch"] = epoch_gflops(head_model(model), n_train, n_val)

    def head_fit(inputs, validation, steps_per_execution=STEPS):
        head = head_model(model)
        head.set_weights(head_weights)
        compile_model(head, "adam", 1e-3, steps_per_execution)
        return timed(lambda: head.fit(
            **inputs, validation_data=validation, epochs=epochs_head, verbose=0,
        ))[0]

    in_memory = {"x": x_train, "y": splits.y_train, "batch_size": batch,
                 "validation_batch_size": 256}
    results["phase1_cached_one_step_s"] = head_fit(
        in_memory, (x_val, splits.y_val), steps_per_execution=1
    )
    results["phase1_cached_trial_s"] = head_fit(in_memory, (x_val, splits.y_val))
    train_rows, val_rows, _ = features.rows_for_splits(splits)
    results["phase1_streamed_trial_s"] = head_fit(
        {"x": FeatureBatches(train_rows, splits.y_train, batch, shuffle=True)},
        FeatureBatches(val_rows, splits.y_val, 256),
    )

    logger.info("float16 against float32 features: %d seeds", args.precision_seeds)
    # The reference: float32 features of the same images, computed in memory.
    exact = [
        extractor.predict(images, batch_size=256, verbose=0)
        for images in (splits.x_train, splits.x_test)
    ]
    results["cached_features_max_relative_error"] = float(np.max(
        np.abs(np.asarray(x_test, np.float32) - exact[1]) / np.maximum(np.abs(exact[1]), 1e-3)
    ))
    for name, dtype in (("float32", np.float32), ("float16", np.float16)):
        accuracies = []
        for seed in range(args.precision_seeds):
            keras.utils.set_random_seed(seed)
            head = head_model(build_model(values, hypermodel.make_backbone(args.image_size)))
            compile_model(head, "adam", 1e-3, STEPS)
            train, test = (a.astype(dtype) for a in exact)
            head.fit(train, splits.y_train, epochs=epochs_head, batch_size=batch, verbose=0)
            accuracies.append(head.evaluate(test, splits.y_test, batch_size=256, verbose=0)[1])
        results[f"head_test_accuracy_{name}"] = accuracies

    logger.info("phase 2, full fine-tuning: two epochs")
    unfreeze_backbone(model, "all", "frozen")
    compile_model(model, "adam", 1e-5)
    results["phase2_full_gflops_per_epoch"] = epoch_gflops(model, n_train, n_val)
    first, later = epoch_seconds(
        model, splits.x_train, splits.y_train, splits.x_val, splits.y_val, batch
    )
    results["phase2_full_first_epoch_s"] = first
    results["phase2_full_epoch_s"] = later
    results["phase2_full_s"] = phase_seconds(first, later, epochs_finetune)

    logger.info("phase 2, conv5 on cached activations: two epochs each")
    keras.backend.clear_session()
    model = build_model(values, hypermodel.make_backbone(args.image_size))
    unfreeze_backbone(model, "conv5", "frozen")
    upper = upper_model(model, cut)
    a_train, a_val, _ = activations.for_splits(splits)
    results["phase2_conv5_gflops_per_epoch"] = epoch_gflops(upper, n_train, n_val)
    for name, steps in (("one_step", 1), ("cached", STEPS)):
        compile_model(upper, "adam", 1e-5, steps)
        first, later = epoch_seconds(upper, a_train, splits.y_train, a_val, splits.y_val, batch)
        results[f"phase2_conv5_{name}_first_epoch_s"] = first
        results[f"phase2_conv5_{name}_epoch_s"] = later
    results["phase2_conv5_s"] = phase_seconds(
        results["phase2_conv5_cached_first_epoch_s"], results["phase2_conv5_cached_epoch_s"],
        epochs_finetune,
    )

    results["trial_naive_s"] = results["phase1_naive_trial_s"] + results["phase2_full_s"]
    results["trial_fastest_s"] = results["phase1_cached_trial_s"] + results["phase2_conv5_s"]
    results["trial_fastest_with_cache_pass_s"] = (
        results["trial_fastest_s"] + results["cache_pool_s"] + results["cache_conv4_s"]
    )
    results["trial_naive_gflops"] = (
        epochs_head * results["phase1_naive_gflops_per_epoch"]
        + epochs_finetune * results["phase2_full_gflops_per_epoch"]
    )
    results["trial_fastest_gflops"] = (
        epochs_head * results["phase1_cached_gflops_per_epoch"]
        + epochs_finetune * results["phase2_conv5_gflops_per_epoch"]
    )
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return results


def _mean(values) -> float:
    return float(np.mean(values))


def _sd(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _mean_sd(values) -> str:
    return f"{_mean(values):.4f} +- {_sd(values):.4f}"


def format_table(results: dict, args) -> str:
    r = results
    peak = r["matmul_peak_gflops"]
    eh, ef, steps = args.epochs_head, args.epochs_finetune, r["steps_per_execution"]

    def rate(gflops: float, seconds: float) -> str:
        return f"{gflops / seconds:.1f} GFLOP/s, {gflops / seconds / peak:.0%} of peak"

    def cache_note(name: str) -> str:
        return "computed in this run" if r[f"cache_{name}_built"] else "entry existed: load only"

    f32, f16 = r["head_test_accuracy_float32"], r["head_test_accuracy_float16"]
    standard_error = float(np.sqrt(_sd(f32) ** 2 / len(f32) + _sd(f16) ** 2 / len(f16)))
    rows = [
        ("fp32 matmul peak", f"{peak:.0f} GFLOP/s", ""),
        (
            f"backbone inference at {args.image_size} px",
            f"{r['inference_images_per_s']:.0f} img/s x {r['backbone_gflops_per_image']:.3f} GFLOP",
            f"{r['inference_fraction_of_peak']:.0%} of peak (target >= 45%)",
        ),
        (f"cache pass, pooled features ({r['feature_dtype']})",
         f"{r['cache_pool_s']:.1f} s", cache_note("pool")),
        (f"cache pass, conv4 activations ({r['feature_dtype']})",
         f"{r['cache_conv4_s']:.1f} s", cache_note("conv4")),
        (
            f"phase 1 per trial ({eh} epochs), naive",
            f"{r['phase1_naive_trial_s']:.1f} s",
            f"{r['phase1_naive_first_epoch_s']:.1f} s + {eh - 1} x {r['phase1_naive_epoch_s']:.1f} s; "
            + rate(eh * r["phase1_naive_gflops_per_epoch"], r["phase1_naive_trial_s"]),
        ),
        (
            "phase 1 per trial, cached features, 1 step per call",
            f"{r['phase1_cached_one_step_s']:.1f} s",
            f"{r['phase1_naive_trial_s'] / r['phase1_cached_one_step_s']:.0f}x faster",
        ),
        (
            f"phase 1 per trial, cached features, {steps} steps per call",
            f"{r['phase1_cached_trial_s']:.1f} s",
            f"{r['phase1_naive_trial_s'] / r['phase1_cached_trial_s']:.0f}x faster (target >= 50x); "
            + rate(eh * r["phase1_cached_gflops_per_epoch"], r["phase1_cached_trial_s"]),
        ),
        (
            "phase 1 per trial, cached features streamed from disk",
            f"{r['phase1_streamed_trial_s']:.1f} s",
            f"{r['phase1_naive_trial_s'] / r['phase1_streamed_trial_s']:.0f}x faster",
        ),
        (
            "phase 1 work per epoch, naive / cached",
            f"{r['phase1_naive_gflops_per_epoch']:.0f} / "
            f"{r['phase1_cached_gflops_per_epoch']:.1f} GFLOP",
            f"{r['phase1_naive_gflops_per_epoch'] / r['phase1_cached_gflops_per_epoch']:.0f}x less work",
        ),
        (f"head test accuracy, float32 features ({len(f32)} seeds)", _mean_sd(f32), ""),
        (
            "head test accuracy, float16-rounded features",
            _mean_sd(f16),
            f"difference {_mean(f16) - _mean(f32):+.4f}, standard error {standard_error:.4f}",
        ),
        (
            "cached test features against float32, largest relative error",
            f"{r['cached_features_max_relative_error']:.1e}", "",
        ),
        (
            "phase 2 per epoch, full fine-tuning",
            f"{r['phase2_full_epoch_s']:.1f} s",
            f"first epoch {r['phase2_full_first_epoch_s']:.1f} s; "
            + rate(r["phase2_full_gflops_per_epoch"], r["phase2_full_epoch_s"]),
        ),
        (
            "phase 2 per epoch, conv5 on cached activations, 1 step per call",
            f"{r['phase2_conv5_one_step_epoch_s']:.1f} s",
            f"{r['phase2_full_epoch_s'] / r['phase2_conv5_one_step_epoch_s']:.1f}x faster",
        ),
        (
            f"phase 2 per epoch, conv5 on cached activations, {steps} steps per call",
            f"{r['phase2_conv5_cached_epoch_s']:.1f} s",
            f"{r['phase2_full_epoch_s'] / r['phase2_conv5_cached_epoch_s']:.1f}x faster; first "
            f"epoch {r['phase2_conv5_cached_first_epoch_s']:.1f} s; "
            + rate(r["phase2_conv5_gflops_per_epoch"], r["phase2_conv5_cached_epoch_s"]),
        ),
        (
            "phase 2 work per epoch, full / conv5",
            f"{r['phase2_full_gflops_per_epoch']:.0f} / "
            f"{r['phase2_conv5_gflops_per_epoch']:.0f} GFLOP",
            f"{r['phase2_full_gflops_per_epoch'] / r['phase2_conv5_gflops_per_epoch']:.1f}x less work",
        ),
        (f"whole trial ({eh}+{ef} epochs), naive", f"{r['trial_naive_s']:.0f} s", ""),
        (
            "whole trial, fastest valid path",
            f"{r['trial_fastest_s']:.0f} s",
            f"{r['trial_naive_s'] / r['trial_fastest_s']:.1f}x faster (target >= 10x)",
        ),
        (
            "whole trial, fastest path plus the cache passes",
            f"{r['trial_fastest_with_cache_pass_s']:.0f} s",
            f"{r['trial_naive_s'] / r['trial_fastest_with_cache_pass_s']:.1f}x faster",
        ),
        (
            "whole trial work, naive / fastest",
            f"{r['trial_naive_gflops']:.0f} / {r['trial_fastest_gflops']:.0f} GFLOP",
            f"{r['trial_naive_gflops'] / r['trial_fastest_gflops']:.1f}x less work",
        ),
        ("peak resident memory", f"{r['peak_rss_mib']:.0f} MiB", ""),
    ]
    width = max(len(name) for name, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    return "\n".join(
        f"{name:<{width}}  {value:>{value_width}}  {note}".rstrip() for name, value, note in rows
    )


def describe_machine() -> str:
    try:
        gpu = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip() or "no GPU"
    except (OSError, subprocess.SubprocessError):
        gpu = "no GPU"
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs ({describe_cpu()}), "
        f"{memory:.0f} GiB, {gpu}"
    )


def describe_cpu() -> str:
    """Return the CPU model and its vector extensions, from /proc/cpuinfo on Linux."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "CPU model unknown"
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    vector = [name for name in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if name in flags]
    return f"{fields.get('model name', 'CPU model unknown')}, {' '.join(vector) or 'no AVX2'}"


def main(argv=None) -> int:
    parser = cli.ArgumentParser(
        prog="python benchmarks/throughput.py",
        description="Measure the speed-up of the feature cache against the naive loop.",
    )
    parser.add_argument("--size", type=int, default=10000,
                        help="training-set size in images (default: 10000)")
    parser.add_argument("--image-size", type=int, default=32,
                        help="backbone input size in pixels (default: 32)")
    parser.add_argument("--epochs-head", type=int, default=10,
                        help="phase-1 epochs per trial (default: 10)")
    parser.add_argument("--epochs-finetune", type=int, default=10,
                        help="phase-2 epochs per trial (default: 10)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="training batch size (default: 64)")
    parser.add_argument("--precision-seeds", type=int, default=5,
                        help="head trainings per feature precision (default: 5)")
    parser.add_argument("--fresh-cache", action="store_true",
                        help="compute the cache entries in a new temporary folder")
    parser.add_argument("--json", metavar="PATH",
                        help="also write the measured values and the settings as JSON")
    cli.add_input_arguments(parser)
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)

    import keras

    started = time.perf_counter()
    results = run(args)
    wall = time.perf_counter() - started
    header = [
        f"machine: {describe_machine()}",
        f"keras {keras.__version__}, backend {keras.backend.backend()}",
        f"size {args.size}, image size {args.image_size}, batch {args.batch_size}, "
        f"epochs {args.epochs_head}+{args.epochs_finetune}, wall {wall:.0f} s",
        "phases of E epochs: the first epoch plus E - 1 times a second, measured epoch "
        "(cached phase 1: all epochs measured)",
    ]
    print("\n".join(header))
    print(format_table(results, args))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"settings": vars(args), "machine": describe_machine(), "wall_s": wall, **results},
            indent=2, default=str,
        ) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run_main(main))
