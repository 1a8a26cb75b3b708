"""The HyperModel: ResNet50 backbone plus a dense classification head.

    input 32x32x3 (uint8 or float, 0-255)
      -> Preprocess (`scale`: x / 255, or `caffe`: ResNet50's own preprocessing)
      -> Resizing to `image_size` (only when it differs from 32)
      -> ResNet50(include_top=False), the "backbone"
      -> GlobalAveragePooling2D
      -> Dense(units_1, relu) -> Dropout -> Dense(units_2, relu) -> Dropout
      -> Dense(10, softmax)

`build()` returns the model ready for phase 1: backbone frozen, head trainable,
compiled with `learning_rate_head`. `unfreeze_backbone()` prepares phase 2.
With a mixed dtype policy (`mixed_float16` for GPUs, `mixed_bfloat16` for
hardware with bfloat16 units) the layers compute in 16 bits and keep float32
weights. The softmax output stays float32, and Keras wraps the optimizer in a
`LossScaleOptimizer` for `mixed_float16`.
The model uses `keras.layers` and `keras.ops` only, so it runs on every Keras
backend.
"""

from __future__ import annotations

import logging

import keras
import keras_tuner
from keras import ops

from study.data import IMAGE_SHAPE, NUM_CLASSES
from study.precision import DEFAULT_DTYPE_POLICY, DTYPE_POLICIES, global_dtype_policy
from study.search_space import SearchSpace
from study.weights import ResolvedWeights

logger = logging.getLogger(__name__)

BACKBONE_NAME = "backbone"
# Per-channel means of ImageNet in BGR order, as
# `keras.applications.resnet50.preprocess_input` subtracts them ("caffe" mode).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="study")
class Preprocess(keras.layers.Layer):
    """Map 0-255 RGB pixels to what the backbone expects.

    Args:
        mode: `scale` divides by 255, as the original notebooks did. `caffe`
            flips RGB to BGR and subtracts the ImageNet channel means, which is
            what `keras.applications.resnet50.preprocess_input` does and what
            the ImageNet weights were trained with.

    Unlike `preprocess_input` on a float numpy array, this layer never modifies
    the caller's array: it runs on tensors inside the model.
    """

    def __init__(self, mode: str = "caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("scale", "caffe"):
            raise ValueError(f"preprocessing mode must be 'scale' or 'caffe', got {mode!r}")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "scale":
            return x / 255.0
        x = ops.flip(x, axis=-1)
        return x - ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


class TransferHyperModel(keras_tuner.HyperModel):
    """ResNet50 plus a tunable head, built from a search space.

    Args:
        search_space: the hyperparameters and training settings.
        weights: resolved backbone weights. The weights file is read on the
            first build only; later builds copy the arrays kept in memory.
        dtype_policy: the Keras dtype policy of the models that `build`
            returns, one of `DTYPE_POLICIES`.

    Raises:
        ValueError: `dtype_policy` is not one of `DTYPE_POLICIES`.
    """

    def __init__(
        self,
        search_space: SearchSpace,
        weights: ResolvedWeights,
        dtype_policy: str = DEFAULT_DTYPE_POLICY,
        **kwargs,
    ):
        super().__init__(name=search_space.name, **kwargs)
        if dtype_policy not in DTYPE_POLICIES:
            raise ValueError(
                f"dtype policy {dtype_policy!r} is not supported; use one of "
                f"{', '.join(DTYPE_POLICIES)}"
            )
        self.search_space = search_space
        self.weights = weights
        self.dtype_policy = dtype_policy
        self._backbone_arrays = None

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        values = self.search_space.declare(hp)
        with global_dtype_policy(self.dtype_policy):
            model = build_model(values, self.make_backbone(values["image_size"]))
            freeze_backbone(model)
            compile_model(
                model, self.search_space.training.optimizer, values["learning_rate_head"]
            )
        return model

    def make_backbone(self, image_size: int) -> keras.Model:
        """Build a `ResNet50(include_top=False)` for `image_size` with the resolved weights."""
        input_shape = (image_size, image_size, 3)
        if self.weights.keras_weights is None:
            return keras.applications.ResNet50(
                include_top=False, weights=None, input_shape=input_shape, name=BACKBONE_NAME
            )
        if self._backbone_arrays is None:
            backbone = keras.applications.ResNet50(
                include_top=False,
                weights=self.weights.keras_weights,
                input_shape=input_shape,
                name=BACKBONE_NAME,
            )
            self._backbone_arrays = backbone.get_weights()
            return backbone
        # Convolution weights do not depend on the input size, so the arrays
        # read once fit every image_size.
        backbone = keras.applications.ResNet50(
            include_top=False, weights=None, input_shape=input_shape, name=BACKBONE_NAME
        )
        backbone.set_weights(self._backbone_arrays)
        return backbone


def _backbone_input(inputs, preprocessing: str, image_size: int):
    x = Preprocess(preprocessing, name="preprocess")(inputs)
    if image_size != IMAGE_SHAPE[0]:
        x = keras.layers.Resizing(
            image_size, image_size, interpolation="bilinear", name="resize"
        )(x)
    return x


def build_model(values: dict, backbone: keras.Model) -> keras.Model:
    """Assemble preprocessing, backbone and head from hyperparameter values."""
    regularizer = keras.regularizers.L2(values["l2"]) if values["l2"] > 0 else None
    inputs = keras.Input(shape=IMAGE_SHAPE, name="image")
    x = _backbone_input(inputs, values["preprocessing"], values["image_size"])
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    for index, units in ((1, values["units_1"]), (2, values["units_2"])):
        x = keras.layers.Dense(
            units, activation="relu", kernel_regularizer=regularizer, name=f"dense_{index}"
        )(x)
        if values["dropout"] > 0:
            x = keras.layers.Dropout(values["dropout"], name=f"dropout_{index}")(x)
    # Under a mixed dtype policy a float32 softmax keeps float16 rounding and
    # overflow out of the probabilities and the loss. Under float32 the
    # argument changes nothing.
    outputs = keras.layers.Dense(
        NUM_CLASSES, activation="softmax", kernel_regularizer=regularizer,
        dtype="float32", name="predictions",
    )(x)
    return keras.Model(inputs, outputs, name="resnet50_transfer")


def feature_extractor(
    backbone: keras.Model, preprocessing: str, image_size: int, cut: str = "pool"
) -> keras.Model:
    """Build the frozen part of `build_model`, from the image up to `cut`.

    With `cut="pool"` the output is the head's input in phase 1 (the pooled
    backbone output). With the name of a backbone layer it is that layer's
    activations, the input of the stages that phase 2 trains. Either can be
    computed once and cached (see `study.features`).
    """
    backbone.trainable = False
    inputs = keras.Input(shape=IMAGE_SHAPE, name="image")
    x = _backbone_input(inputs, preprocessing, image_size)
    if cut == "pool":
        x = backbone(x)
        outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    else:
        lower = keras.Model(backbone.input, backbone.get_layer(cut).output, name="backbone_lower")
        outputs = lower(x)
    return keras.Model(inputs, outputs, name="feature_extractor")


def head_model(model: keras.Model) -> keras.Model:
    """Build a model from pooled features to predictions that shares `model`'s head layers.

    Training it trains the head of `model` in place: the layers, and so the
    weights, are the same objects.
    """
    pool = model.get_layer("pool")
    # A model takes the global dtype policy when it is built, and with
    # mixed_float16 that policy is what makes compile() scale the loss.
    with global_dtype_policy(model.dtype_policy.name):
        inputs = keras.Input(shape=pool.output.shape[1:], name="features")
        return keras.Model(inputs, _apply_layers_after(model, pool, inputs), name="head")


def upper_model(model: keras.Model, cut: str) -> keras.Model:
    """Build a model from the activations of backbone layer `cut` to the predictions.

    It shares every layer above `cut` with `model`, so training it trains
    `model` in place, with the trainable flags that `unfreeze_backbone` set.
    """
    backbone = backbone_of(model)
    cut_output = backbone.get_layer(cut).output
    with global_dtype_policy(model.dtype_policy.name):
        upper_backbone = keras.Model(cut_output, backbone.output, name="backbone_upper")
        inputs = keras.Input(shape=cut_output.shape[1:], name="activations")
        x = upper_backbone(inputs)
        return keras.Model(inputs, _apply_layers_after(model, backbone, x), name="upper")


def _apply_layers_after(model: keras.Model, layer, x):
    layers = model.layers
    for later in layers[layers.index(layer) + 1:]:
        x = later(x)
    return x


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    optimizers = {
        "adam": keras.optimizers.Adam,
        "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate, momentum=0.9),
        "rmsprop": keras.optimizers.RMSprop,
    }
    return optimizers[name](learning_rate=learning_rate)


def compile_model(
    model: keras.Model, optimizer: str, learning_rate: float, steps_per_execution: int = 1
) -> None:
    """Compile for 10-class training with integer labels.

    `steps_per_execution` runs that many batches per call into the compiled
    train function. The updates are the same; batch-level callbacks run less
    often. It pays off for small models on cached inputs, whose steps are
    short enough that the per-call overhead counts.
    """
    model.compile(
        optimizer=make_optimizer(optimizer, learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )


def backbone_of(model: keras.Model) -> keras.Model:
    return model.get_layer(BACKBONE_NAME)


def freeze_backbone(model: keras.Model) -> None:
    """Phase 1: freeze the whole backbone, BatchNormalization included.

    In Keras 3 a non-trainable BatchNormalization layer runs in inference mode,
    so its moving statistics stay at their ImageNet values.
    """
    backbone_of(model).trainable = False


def unfreeze_backbone(model: keras.Model, depth: str, bn_policy: str) -> list[str]:
    """Phase 2: make the backbone trainable from stage `depth` on.

    Args:
        model: a model from `build_model`.
        depth: `all`, or `conv3`, `conv4`, `conv5` to unfreeze from the first
            layer of that stage to the end of the backbone.
        bn_policy: `frozen` keeps every BatchNormalization layer non-trainable,
            so it runs in inference mode and keeps the ImageNet statistics.
            `trainable` lets them train and update their moving statistics, as
            the original notebooks did. Passing `training=False` when the backbone is called does not
            survive `fit()` in Keras 3, so the policy is set per layer here.

    Returns:
        Names of the backbone layers that are trainable afterwards.

    The caller must compile the model again for the change to take effect.
    """
    backbone = backbone_of(model)
    backbone.trainable = True
    layers = backbone.layers
    if depth == "all":
        start = 0
    else:
        prefix = f"{depth}_"
        start = next((i for i, layer in enumerate(layers) if layer.name.startswith(prefix)), None)
        if start is None:
            raise ValueError(f"the backbone has no stage {depth!r}")
    for index, layer in enumerate(layers):
        trainable = index >= start
        if bn_policy == "frozen" and isinstance(layer, keras.layers.BatchNormalization):
            trainable = False
        layer.trainable = trainable
    return [layer.name for layer in layers if layer.trainable and layer.weights]
