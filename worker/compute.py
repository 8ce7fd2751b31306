"""Turn validated requests into tensors, run the core, and turn the outcome into result JSON."""

import logging

import numpy as np
import torch

from services import EpochCallback, corr2d, learn_kernel, strategy
from shared.arrays import to_json
from shared.schemas import CorrelationRequest, KernelTrainingRequest

log = logging.getLogger(__name__)


class OutputNotFinite(ArithmeticError):
    """The output overflowed float32."""


def _tensor(matrix: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(matrix).to(device)


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().contiguous().numpy()


def correlate(request: CorrelationRequest, device: torch.device, on_epoch: EpochCallback | None = None) -> bytes:
    """Run a correlation request; return its result as JSON. A correlation has no epochs to report."""
    path = strategy(request.output_shape, request.kernel.shape, request.stride)
    log.info("correlating %s by %s with a %s kernel", request.input.shape, path, request.kernel.shape)
    output = corr2d(
        _tensor(request.input, device),
        _tensor(request.kernel, device),
        padding=request.padding,
        stride=request.stride,
        bias=request.bias,
    )
    output = _array(output)
    if not np.isfinite(output).all():  # numpy's check is ~10x faster than torch's on one thread (measured)
        raise OutputNotFinite("the output overflowed float32 (it holds inf or NaN): scale the input or kernel down")
    return to_json({"output": output, "shape": list(output.shape)}, request.result_format)


def train(request: KernelTrainingRequest, device: torch.device, on_epoch: EpochCallback) -> bytes:
    """Run a kernel training request, reporting each epoch's loss; return its result as JSON."""
    X = _tensor(request.input, device)
    if request.target is not None:
        Y = _tensor(request.target, device)
    else:
        Y = corr2d(X, _tensor(request.target_kernel, device))
    learned = learn_kernel(
        X,
        Y,
        request.resolved_kernel_size,
        lr=request.lr,
        epochs=request.epochs,
        bias=request.bias,
        seed=request.seed,
        on_epoch=on_epoch,
    )
    result = {
        "kernel": _array(learned.kernel),
        "bias": learned.bias,
        "loss": learned.losses[-1],
        "loss_history": learned.losses,
        "epochs_run": learned.epochs_run,
    }
    return to_json(result, request.result_format)
