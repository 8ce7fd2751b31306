"""Several input and output channels, the chapter's next section: C x H x W inputs, O x C x kh x kw kernels.

A C x kh x kw kernel correlates each input channel with its own slice and sums
the results into one output channel (the chapter's corr2d_multi_in); an
O x C x kh x kw kernel does that O times, one output channel each
(corr2d_multi_in_out). A 1 x 1 kernel mixes the channels pixel by pixel.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from services.corr2d import Pair, checked_output_shape, corr2d, corr2d_reference

Bias = float | Sequence[float] | torch.Tensor
"""One number for every output element, or one per output channel of an O x C x kh x kw kernel."""


class OutputNotFinite(ArithmeticError):
    """A correlation's output overflowed float32: it holds inf or NaN (the caller checks, where it matters)."""


def correlate(
    X: torch.Tensor, K: torch.Tensor, *, padding: Pair = (0, 0), stride: Pair = (1, 1), bias: Bias = 0.0
) -> torch.Tensor:
    """Any supported shapes: 2-D by corr2d's fast paths, with channels by torch's conv2d; a 2-D input is one channel."""
    if X.dim() == 2 and K.dim() == 2:
        return corr2d(X, K, padding=padding, stride=stride, bias=bias)
    return corr2d_multi(X if X.dim() == 3 else X[None], K, padding=padding, stride=stride, bias=bias)


def corr2d_multi(
    X: torch.Tensor, K: torch.Tensor, *, padding: Pair = (0, 0), stride: Pair = (1, 1), bias: Bias = 0.0
) -> torch.Tensor:
    """(C, H, W) by (C, kh, kw) -> (oh, ow), or by (O, C, kh, kw) -> (O, oh, ow), in one call of torch's conv2d."""
    weight = _as_4d(X, K, padding, stride)
    biases = _per_channel(bias, weight.shape[0], X)
    out = F.conv2d(X[None], weight.to(X.dtype), biases, stride=stride, padding=padding)[0]
    return out if K.dim() == 4 else out[0]


def corr2d_multi_reference(
    X: torch.Tensor, K: torch.Tensor, *, padding: Pair = (0, 0), stride: Pair = (1, 1), bias: Bias = 0.0
) -> torch.Tensor:
    """The chapter's definitions over the seed's loop: the executable definition the fast path is tested against."""
    _as_4d(X, K, padding, stride)
    if K.dim() == 3:
        channels = (corr2d_reference(x, k, padding=padding, stride=stride) for x, k in zip(X, K, strict=True))
        return sum(channels) + torch.as_tensor(bias, dtype=X.dtype)
    biases = _per_channel(bias, K.shape[0], X)
    return torch.stack(
        [corr2d_multi_reference(X, k, padding=padding, stride=stride, bias=b) for k, b in zip(K, biases, strict=True)]
    )


def _as_4d(X: torch.Tensor, K: torch.Tensor, padding: Pair, stride: Pair) -> torch.Tensor:
    """K as (O, C, kh, kw), after checking it against X's channels and padded size."""
    if X.dim() != 3 or K.dim() not in (3, 4):
        raise ValueError(
            f"expected a C x H x W input and a 3-D or 4-D kernel, not {tuple(X.shape)} and {tuple(K.shape)}"
        )
    weight = K if K.dim() == 4 else K[None]
    if weight.shape[1] != X.shape[0]:
        raise ValueError(f"kernel {tuple(K.shape)} has {weight.shape[1]} input channels but X has {X.shape[0]}")
    checked_output_shape(tuple(X.shape[1:]), tuple(K.shape[-2:]), padding, stride)
    return weight


def _per_channel(bias: Bias, channels: int, like: torch.Tensor) -> torch.Tensor:
    """The bias as one value per output channel."""
    values = torch.as_tensor(bias, dtype=like.dtype, device=like.device)
    if values.dim() == 0:
        return values.expand(channels).contiguous()
    if values.shape != (channels,):
        raise ValueError(f"bias has {values.numel()} values for {channels} output channels")
    return values
