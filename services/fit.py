"""Learning a kernel from several (input, target) pairs, with channels, minibatches and torch's optimizers.

The general form of the seed's training: the loss is the sum (the seed's) or
the mean of squared errors over a minibatch; `sgd` is the seed's plain
gradient descent, `momentum` and `adam` are torch.optim's. An epoch's loss is
that of every pair at the forward passes of the epoch (the seed's number for
one pair). The seed's own case (one 2-D pair, sgd, sum, no batches) goes to
learn_kernel's closed-form gradient, which gives the same numbers faster.
"""

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from services.learn import EpochCallback, LearnedKernel, learn_kernel, run_epochs

Optimizer = Literal["sgd", "momentum", "adam"]
Loss = Literal["sum", "mean"]


@dataclass(frozen=True)
class Training:
    """How to train: the seed's defaults, and what the general loop adds to them."""

    lr: float = 0.03
    epochs: int = 20
    bias: bool = False
    seed: int = 0
    optimizer: Optimizer = "sgd"
    momentum: float = 0.9  # only with optimizer="momentum"
    loss: Loss = "sum"
    tolerance: float | None = None  # stop after the first epoch whose loss is below it
    batch_size: int | None = None  # None: every pair in one batch
    shuffle: bool = False  # a new order of the pairs each epoch, drawn from `seed`


def fit_kernel(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    kernel_shape: tuple[int, ...],
    training: Training = Training(),
    on_epoch: EpochCallback | None = None,
) -> LearnedKernel:
    """Learn a kernel of `kernel_shape` mapping inputs (N, C, H, W) to targets (N, O, oh, ow); stride 1, no padding.

    `kernel_shape` is (kh, kw), (C, kh, kw) or (O, C, kh, kw); the learned kernel has that shape, and its bias is
    one number, or one per output channel for a 4-D kernel. The initial kernel is drawn uniformly from [0, 1) on
    the CPU from `seed`, as the seed's Conv2D does, so equal requests give equal results on any device.
    """
    if _is_the_seeds_case(inputs, kernel_shape, training):
        return learn_kernel(
            inputs[0, 0],
            targets[0, 0],
            kernel_shape,
            lr=training.lr,
            epochs=training.epochs,
            bias=training.bias,
            seed=training.seed,
            tolerance=training.tolerance,
            on_epoch=on_epoch,
        )
    generator = torch.Generator().manual_seed(training.seed)
    device = inputs.device
    kernel = torch.rand(kernel_shape, generator=generator).to(device).requires_grad_()
    out_channels = kernel_shape[0] if len(kernel_shape) == 4 else 1
    offset = torch.zeros(out_channels, device=device, requires_grad=training.bias)
    optimizer = _optimizer(training, [kernel, offset] if training.bias else [kernel])
    weight = kernel.view(out_channels, inputs.shape[1], *kernel_shape[-2:])

    def step() -> float:
        squared_error = torch.zeros((), device=device)
        for batch in _batches(len(inputs), training, generator):
            error = F.conv2d(inputs[batch], weight, offset) - targets[batch]
            batch_loss = (error**2).sum()
            optimizer.zero_grad(set_to_none=True)
            (batch_loss / error.numel() if training.loss == "mean" else batch_loss).backward()
            optimizer.step()
            squared_error += batch_loss.detach()
        return (squared_error / targets.numel() if training.loss == "mean" else squared_error).item()

    run = run_epochs(step, [kernel, offset], training.epochs, training.lr, training.tolerance, on_epoch)
    learned_bias = offset.detach().cpu()
    bias = (learned_bias.tolist() if len(kernel_shape) == 4 else learned_bias.item()) if training.bias else None
    return LearnedKernel(kernel.detach().cpu(), bias, *run)


def _is_the_seeds_case(inputs: torch.Tensor, kernel_shape: tuple[int, ...], training: Training) -> bool:
    return (
        len(inputs) == 1
        and len(kernel_shape) == 2
        and training.optimizer == "sgd"
        and training.loss == "sum"
        and training.batch_size in (None, 1)
    )


def _optimizer(training: Training, parameters: list[torch.Tensor]) -> torch.optim.Optimizer:
    if training.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=training.lr)
    momentum = training.momentum if training.optimizer == "momentum" else 0.0
    return torch.optim.SGD(parameters, lr=training.lr, momentum=momentum)


def _batches(count: int, training: Training, generator: torch.Generator) -> list[torch.Tensor | slice]:
    """The pairs of each step of an epoch: all at once, or batch_size at a time, in order or shuffled."""
    size = training.batch_size or count
    if training.shuffle:
        return list(torch.randperm(count, generator=generator).split(size))
    return [slice(start, start + size) for start in range(0, count, size)]
