"""Turn validated requests into tensors, run the core, and turn the outcome into result JSON."""

import orjson
import torch

from services import EpochCallback, corr2d, learn_kernel
from shared.schemas import CorrelationRequest, KernelTrainingRequest


class OutputNotFinite(ArithmeticError):
    """The output overflowed float32."""


def _tensor(matrix: list[list[float]], device: torch.device) -> torch.Tensor:
    return torch.tensor(matrix, dtype=torch.float32, device=device)


def correlate(request: CorrelationRequest, device: torch.device, on_epoch: EpochCallback | None = None) -> bytes:
    """Run a correlation request; return its result as JSON. A correlation has no epochs to report."""
    output = corr2d(
        _tensor(request.input, device),
        _tensor(request.kernel, device),
        padding=request.padding,
        stride=request.stride,
        bias=request.bias,
    )
    if not torch.isfinite(output).all():
        raise OutputNotFinite("the output overflowed float32 (it holds inf or NaN): scale the input or kernel down")
    return orjson.dumps({"output": output.tolist(), "shape": list(output.shape)})


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
    return orjson.dumps(
        {
            "kernel": learned.kernel.tolist(),
            "bias": learned.bias,
            "loss": learned.losses[-1],
            "loss_history": learned.losses,
            "epochs_run": learned.epochs_run,
        }
    )
