"""The numerical core of convq: pure PyTorch, no HTTP, Celery or Redis."""

from services.conv2d import Conv2D
from services.corr2d import corr2d, corr2d_reference, output_shape, strategy, zero_pad
from services.device import pick_device
from services.learn import EpochCallback, LearnedKernel, TrainingDiverged, learn_kernel

__all__ = [
    "Conv2D",
    "EpochCallback",
    "LearnedKernel",
    "TrainingDiverged",
    "corr2d",
    "corr2d_reference",
    "learn_kernel",
    "output_shape",
    "pick_device",
    "strategy",
    "zero_pad",
]
