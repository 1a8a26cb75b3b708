"""Numeric precision: the dtype of cached backbone outputs and the dtype policy of models.

Both are choices between speed or space and exactness, set from the command
line (`--feature-dtype`, `--dtype-policy`). This module imports Keras only
when a policy is applied, so the command line can validate them quickly.
"""

from __future__ import annotations

import contextlib

FEATURE_DTYPES = ("float16", "float32")
DEFAULT_FEATURE_DTYPE = "float16"
# Keras dtype policies for the trained models: mixed_float16 suits GPUs with
# float16 units, mixed_bfloat16 hardware with bfloat16 units.
DTYPE_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
# Also the policy of every record and project written before the option existed.
DEFAULT_DTYPE_POLICY = "float32"


@contextlib.contextmanager
def global_dtype_policy(name: str):
    """Set Keras' global dtype policy to `name` for the layers built inside.

    `keras.backend.clear_session()` resets the global policy, so code that
    clears the session inside this block must set the policy again.
    """
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
