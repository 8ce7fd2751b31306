"""The seed's convolution layer: a learnable kernel and a scalar bias around corr2d."""

import torch
from torch import nn

from services.corr2d import corr2d


class Conv2D(nn.Module):
    """forward(x) = corr2d(x, weight) + bias, with weight drawn uniformly from [0, 1) as in the seed."""

    def __init__(self, kernel_size: tuple[int, int], *, generator: torch.Generator | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(kernel_size, generator=generator))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return corr2d(x, self.weight) + self.bias
