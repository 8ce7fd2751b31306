"""Learning a kernel from an input/output pair, as in the seed: summed squared error, plain gradient descent.

The loop knows nothing of where losses go: it hands each epoch's loss to an
`on_epoch` callback, which may ask it to stop (cancellation).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from services.conv2d import Conv2D
from services.corr2d import accumulate, checked_output_shape, flat_length, tap_windows

EpochCallback = Callable[[int, float], bool]
"""Called as on_epoch(epoch, loss) after each epoch (1-based); return True to stop the training."""


class TrainingDiverged(ArithmeticError):
    """The loss became NaN or infinite: the learning rate is too large for this data."""

    def __init__(self, epoch: int, what: str, lr: float):
        self.epoch, self.lr = epoch, lr
        super().__init__(f"training diverged at epoch {epoch}: {what}; lower lr (it was {lr:g}, try {lr / 10:g})")


@dataclass(frozen=True)
class LearnedKernel:
    kernel: torch.Tensor  # in the shape asked for, on the CPU
    bias: float | list[float] | None  # None when no bias was learned; a list: one per output channel
    losses: list[float]  # losses[i - 1] is the loss of epoch i's forward pass
    stopped_early: bool  # on_epoch asked to stop before the last epoch
    converged: bool  # the last loss is below the tolerance

    @property
    def epochs_run(self) -> int:
        return len(self.losses)


def learn_kernel(
    X: torch.Tensor,
    Y: torch.Tensor,
    kernel_size: tuple[int, int],
    *,
    lr: float = 0.03,
    epochs: int = 20,
    bias: bool = False,
    seed: int = 0,
    tolerance: float | None = None,
    on_epoch: EpochCallback | None = None,
    device: torch.device | None = None,
) -> LearnedKernel:
    """Learn the kernel (and optionally a scalar bias) that maps X to Y by the seed's training loop.

    The seed's loop: loss = sum((corr2d(X, K) + b - Y)^2), then K -= lr * dloss/dK (and b likewise),
    with the gradient in closed form rather than by autograd: the seed's numbers up to float rounding,
    many times faster.
    The initial kernel is the seed's Conv2D's, drawn on the CPU from `seed`, so equal requests give
    equal results on any device. Stops after the first epoch whose loss is below `tolerance`, if given.
    Raises TrainingDiverged when a loss is not finite.
    """
    device = device or X.device
    kernel = Conv2D(kernel_size, generator=torch.Generator().manual_seed(seed)).weight.detach().to(device)
    offset = torch.zeros((), device=device)
    error = SquaredError(X.to(device), Y.to(device), kernel_size)

    def step() -> float:
        loss, kernel_grad, offset_grad = error.loss_and_gradients(kernel, offset)
        kernel.sub_(lr * kernel_grad)
        if bias:
            offset.sub_(lr * offset_grad)
        return loss.item()

    run = run_epochs(step, [kernel, offset], epochs, lr, tolerance, on_epoch)
    return LearnedKernel(kernel.cpu(), offset.item() if bias else None, *run)


def run_epochs(
    step: Callable[[], float],
    parameters: list[torch.Tensor],
    epochs: int,
    lr: float,
    tolerance: float | None,
    on_epoch: EpochCallback | None,
) -> tuple[list[float], bool, bool]:
    """The epoch loop every training shares: `step` runs one epoch, updating `parameters`, and returns its loss.

    Each loss goes to on_epoch, which may stop the loop, as may a loss below `tolerance`. Returns the losses,
    whether on_epoch stopped it early, and whether it converged; raises TrainingDiverged on a loss or parameter
    that is not finite.
    """
    losses: list[float] = []
    for epoch in range(1, epochs + 1):
        value = step()
        if not math.isfinite(value):
            raise TrainingDiverged(epoch, f"loss became {value}", lr)
        losses.append(value)
        asked_to_stop = on_epoch is not None and on_epoch(epoch, value)
        converged = tolerance is not None and value < tolerance
        if asked_to_stop or converged:
            break
    if not all(torch.isfinite(parameter).all() for parameter in parameters):
        raise TrainingDiverged(len(losses), "the kernel became inf or NaN", lr)
    return losses, asked_to_stop and len(losses) < epochs, converged


class SquaredError:
    """sum((corr2d(X, K) + b - Y)^2) and its gradient in K and b, in closed form (stride 1, no padding).

    With the residual R = corr2d(X, K) + b - Y: dloss/dK[i, j] = 2 sum(R * the window of X at (i, j))
    and dloss/db = 2 sum(R). R is kept in X's row pitch, its junk columns zeroed, so that each of these
    sums is one dot product of two contiguous runs.
    """

    def __init__(self, X: torch.Tensor, Y: torch.Tensor, kernel_shape: tuple[int, int]):
        X = X.contiguous()
        (oh, ow), width = checked_output_shape(tuple(X.shape), kernel_shape), X.shape[1]
        self.kernel_shape, length = kernel_shape, flat_length((oh, ow), width)
        pitched = torch.zeros((oh, width), dtype=X.dtype, device=X.device)  # the residual, rows `width` apart
        self.junk, self.residual = pitched[:, ow:], pitched.view(-1)[:length]
        target = torch.zeros_like(pitched)
        target[:, :ow] = Y
        self.target = target.view(-1)[:length]
        self.windows = tap_windows(X, kernel_shape, self.residual.shape, (1,))

    def loss_and_gradients(
        self, kernel: torch.Tensor, offset: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, dloss/dkernel, dloss/doffset) at this kernel and bias."""
        R = self.residual
        accumulate(R, self.windows, kernel.flatten().tolist(), offset)
        R.sub_(self.target)
        self.junk.zero_()
        # mv, not dot: MKL's dot is 5x slower on runs that are not 16-byte aligned, as most windows are.
        kernel_grad = torch.cat([torch.mv(window[None], R) for window in self.windows]).view(self.kernel_shape)
        return torch.dot(R, R), 2 * kernel_grad, 2 * R.sum()
