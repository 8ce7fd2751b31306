"""The numerical core of convq: pure PyTorch, no HTTP, Celery or Redis."""

from services.channels import OutputNotFinite, corr2d_multi, corr2d_multi_reference, correlate
from services.conv2d import Conv2D
from services.corr2d import corr2d, corr2d_reference, output_shape, strategy, zero_pad
from services.device import pick_device
from services.fit import Training, fit_kernel
from services.learn import EpochCallback, LearnedKernel, TrainingDiverged, learn_kernel

__all__ = [
    "Conv2D",
    "EpochCallback",
    "LearnedKernel",
    "OutputNotFinite",
    "Training",
    "TrainingDiverged",
    "corr2d",
    "corr2d_multi",
    "corr2d_multi_reference",
    "corr2d_reference",
    "correlate",
    "fit_kernel",
    "learn_kernel",
    "output_shape",
    "pick_device",
    "strategy",
    "zero_pad",
]
