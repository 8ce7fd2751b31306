"""Learning a kernel from an input/output pair, as in the seed: summed squared error, plain gradient descent.

The loop knows nothing of where losses go: it hands each epoch's loss to an
`on_epoch` callback, which may ask it to stop (cancellation).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from services.conv2d import Conv2D

EpochCallback = Callable[[int, float], bool]
"""Called as on_epoch(epoch, loss) after each epoch (1-based); return True to stop the training."""


class TrainingDiverged(ArithmeticError):
    """The loss became NaN or infinite: the learning rate is too large for this data."""

    def __init__(self, epoch: int, what: str, lr: float):
        self.epoch, self.lr = epoch, lr
        super().__init__(f"training diverged at epoch {epoch}: {what}; lower lr (it was {lr:g}, try {lr / 10:g})")


@dataclass(frozen=True)
class LearnedKernel:
    kernel: torch.Tensor  # (kh, kw), on the CPU
    bias: float | None  # None when no bias was learned
    losses: list[float]  # losses[i - 1] is the loss of epoch i's forward pass
    stopped_early: bool  # on_epoch asked to stop before the last epoch

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
    on_epoch: EpochCallback | None = None,
    device: torch.device | None = None,
) -> LearnedKernel:
    """Learn the kernel (and optionally a scalar bias) that maps X to Y by the seed's training loop.

    The initial kernel is drawn on the CPU from `seed`, so equal requests give
    equal results on any device. Raises TrainingDiverged when a loss is not finite.
    """
    device = device or X.device
    model = Conv2D(kernel_size, generator=torch.Generator().manual_seed(seed)).to(device)
    model.bias.requires_grad_(bias)
    X, Y = X.to(device), Y.to(device)
    trained = [model.weight, model.bias] if bias else [model.weight]
    losses: list[float] = []
    stopped_early = False
    for epoch in range(1, epochs + 1):
        loss = ((model(X) - Y) ** 2).sum()
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for parameter in trained:
                parameter -= lr * parameter.grad
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingDiverged(epoch, f"loss became {value}", lr)
        losses.append(value)
        if on_epoch is not None and on_epoch(epoch, value) and epoch < epochs:
            stopped_early = True
            break
    if not all(torch.isfinite(parameter).all() for parameter in trained):
        raise TrainingDiverged(len(losses), "the kernel became inf or NaN", lr)
    learned_bias = model.bias.item() if bias else None
    return LearnedKernel(model.weight.detach().cpu(), learned_bias, losses, stopped_early)
