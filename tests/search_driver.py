"""Run `python -m study.search` with the test set cut short, for subprocess tests.

Evaluating all 10,000 test images takes tens of seconds per phase on CPU, so a
subprocess run keeps the first `STUDY_TEST_IMAGES` (default 20). Everything
else is the real command.

    python tests/search_driver.py --size 20 --search-space tiny.toml ...
"""

import dataclasses
import os

import study.splits
from study import cli
from study.search import main

_make_splits = study.splits.make_splits


def _make_splits_small_test_set(*args, **kwargs):
    splits = _make_splits(*args, **kwargs)
    keep = int(os.environ.get("STUDY_TEST_IMAGES", "20"))
    return dataclasses.replace(splits, x_test=splits.x_test[:keep], y_test=splits.y_test[:keep])


if __name__ == "__main__":
    study.splits.make_splits = _make_splits_small_test_set
    raise SystemExit(cli.run_main(main))
