"""Two-dimensional cross-correlation: the seed's reference loop and the fast paths users run."""

from typing import Literal

import torch
import torch.nn.functional as F

Pair = tuple[int, int]
Path = Literal["shift_add", "packed_conv", "conv2d"]

LANES = 8
"""packed_conv deals the input's columns into this many channels (one AVX2 register of float32)."""

# Cost model of the paths, in microseconds on one thread, fitted to medians measured on the project's
# 2-core EPYC VM (torch 2.13 CPU). Per call: shift_add ~40 plus ~5 per tap; conv2d ~30 (~150 for
# kernels over 3x3); packed_conv ~200 (padding, banded weight, layout). Per output element:
# shift_add 0.20 ns per tap (one memory-bound pass each; 0.24 ms per 1024x1024 3x3 tap... 1.9 ms
# in all), conv2d 0.8 ns per tap (1.1-4.5 ns at 1024x1024, 3x3), packed_conv 0.4 ns per kernel row
# and lane group spanned (1024x1024: 1.9 ms at 3x3, 10-13 ms at 11x11).
# Measured wins: conv2d below ~150x150 outputs for 3x3; shift_add from there on up to ~5x5 kernels
# and for tall kernels; packed_conv for 7x7 and up from ~190x190, 15x15 and up from 64x64, wide 1xN.
SHIFT_ADD_US = (40.0, 5.0, 0.20e-3)  # per call, per tap, per tap and output
CONV2D_US = (30.0, 150.0, 0.8e-3)  # per call up to 3x3 kernels, per call for larger ones, per tap and output
PACKED_CONV_US = (200.0, 0.4e-3)  # per call, per output, kernel row and lane group spanned


def output_shape(input_shape: Pair, kernel_shape: Pair, padding: Pair = (0, 0), stride: Pair = (1, 1)) -> Pair:
    """Return (oh, ow) of correlating an input with a kernel; either may be <= 0 if the kernel does not fit."""
    (h, w), (kh, kw), (ph, pw), (sh, sw) = input_shape, kernel_shape, padding, stride
    return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


def checked_output_shape(input_shape: Pair, kernel_shape: Pair, padding: Pair = (0, 0), stride: Pair = (1, 1)) -> Pair:
    """output_shape, refusing a kernel larger than the padded input."""
    out_shape = output_shape(input_shape, kernel_shape, padding, stride)
    if out_shape[0] < 1 or out_shape[1] < 1:
        raise ValueError(f"kernel {kernel_shape} is larger than the padded input {input_shape} (padding {padding})")
    return out_shape


def zero_pad(X: torch.Tensor, padding: Pair) -> torch.Tensor:
    """Surround X with padding[0] rows and padding[1] columns of zeros on each side (no copy when none)."""
    return F.pad(X, (padding[1], padding[1], padding[0], padding[0])) if padding != (0, 0) else X


def strategy(out_shape: Pair, kernel_shape: Pair, stride: Pair = (1, 1), *, grad: bool = False) -> Path:
    """Name the path corr2d takes for this shape: the cheapest by the cost model above.

    With `grad` (autograd must see through the result) or a column stride, only conv2d applies.
    """
    if grad or stride[1] != 1:
        return "conv2d"
    costs = estimated_us(out_shape[0] * out_shape[1], kernel_shape)
    return min(costs, key=costs.__getitem__)


def estimated_us(outputs: int, kernel_shape: Pair) -> dict[Path, float]:
    """Each path's cost in microseconds on one thread, for `outputs` outputs at column stride 1."""
    kh, kw = kernel_shape
    taps = kh * kw
    conv2d_call = CONV2D_US[0] if taps <= 9 else CONV2D_US[1]
    return {
        "shift_add": SHIFT_ADD_US[0] + taps * (SHIFT_ADD_US[1] + outputs * SHIFT_ADD_US[2]),
        "packed_conv": PACKED_CONV_US[0] + outputs * kh * lane_spans(kw) * PACKED_CONV_US[1],
        "conv2d": conv2d_call + outputs * taps * CONV2D_US[2],
    }


def corr2d_reference(
    X: torch.Tensor, K: torch.Tensor, *, padding: Pair = (0, 0), stride: Pair = (1, 1), bias: float = 0.0
) -> torch.Tensor:
    """The seed's double loop over output positions, grown by zero padding, stride and bias.

    Slow by design: it is the executable definition that the fast paths are tested against.
    """
    X = zero_pad(X, padding)
    h, w = K.shape
    sh, sw = stride
    Y = torch.zeros(output_shape(tuple(X.shape), (h, w), stride=stride), dtype=X.dtype)
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j] = (X[i * sh : i * sh + h, j * sw : j * sw + w] * K).sum()
    return Y + bias


def corr2d(
    X: torch.Tensor,
    K: torch.Tensor,
    *,
    padding: Pair = (0, 0),
    stride: Pair = (1, 1),
    bias: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """Cross-correlate a 2-D input with a 2-D kernel by the path `strategy` names; differentiable in X, K and bias.

    The result may be a view of a slightly wider buffer (see shift_add and packed_conv).
    """
    out_shape = checked_output_shape(tuple(X.shape), tuple(K.shape), padding, stride)
    dtype = torch.result_type(X, K)
    X, K = X.to(dtype), K.to(dtype)
    tracked = (X, K, bias) if isinstance(bias, torch.Tensor) else (X, K)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in tracked)
    path = strategy(out_shape, tuple(K.shape), stride, grad=grad)
    if path == "conv2d":
        return conv2d(X, K, padding, stride) + bias
    compute = shift_add if path == "shift_add" else packed_conv
    if isinstance(bias, torch.Tensor):
        return compute(X, K, padding, stride[0]) + bias
    return compute(X, K, padding, stride[0], bias)


def shift_add(X: torch.Tensor, K: torch.Tensor, padding: Pair, row_stride: int = 1, bias: float = 0.0) -> torch.Tensor:
    """One scaled add of a shifted window of the input per kernel tap, scaled by Python floats: no autograd.

    Column stride 1. At row stride 1 the output keeps the input's row pitch (its last kw - 1 columns are
    junk, cut off by the returned view), so that every tap's window is one contiguous run of the input:
    a 1-D axpy over the whole output. The cost is memory traffic: one pass over the output per tap.
    """
    oh, ow = output_shape(tuple(X.shape), tuple(K.shape), padding, (row_stride, 1))
    x = zero_pad(X, padding).contiguous()
    width = x.shape[1]
    offset = torch.tensor(bias, dtype=x.dtype, device=x.device)
    if row_stride == 1:
        out = torch.empty((oh, width), dtype=x.dtype, device=x.device)
        flat = out.view(-1)[: flat_length((oh, ow), width)]
        accumulate(flat, tap_windows(x, tuple(K.shape), flat.shape, (1,)), K.flatten().tolist(), offset)
        return out[:, :ow]
    out = torch.empty((oh, ow), dtype=x.dtype, device=x.device)
    accumulate(out, tap_windows(x, tuple(K.shape), (oh, ow), (row_stride * width, 1)), K.flatten().tolist(), offset)
    return out


def flat_length(out_shape: Pair, width: int) -> int:
    """Elements from the first output to the last, the output's rows `width` apart (the input's row pitch)."""
    return (out_shape[0] - 1) * width + out_shape[1]


def tap_windows(
    x: torch.Tensor, kernel_shape: Pair, shape: tuple[int, ...], strides: tuple[int, ...]
) -> list[torch.Tensor]:
    """Views of contiguous 2-D x, one per kernel tap in row-major order: the window at (i, j), as `shape`."""
    width, start = x.shape[1], x.storage_offset()
    taps = [(i, j) for i in range(kernel_shape[0]) for j in range(kernel_shape[1])]
    return [x.as_strided(shape, strides, start + i * width + j) for i, j in taps]


def accumulate(out: torch.Tensor, windows: list[torch.Tensor], scales: list[float], bias: torch.Tensor) -> None:
    """out = bias + the sum of scale * window, in place: one pass over out per window, no temporaries."""
    torch.add(bias, windows[0], alpha=scales[0], out=out)
    for window, scale in zip(windows[1:], scales[1:], strict=True):
        out.add_(window, alpha=scale)


def lane_spans(kernel_width: int) -> int:
    """How many lane groups of the input one output lane group reads in packed_conv."""
    return (LANES - 1 + kernel_width - 1) // LANES + 1


def packed_conv(
    X: torch.Tensor, K: torch.Tensor, padding: Pair, row_stride: int = 1, bias: float = 0.0
) -> torch.Tensor:
    """torch's convolution with the input's columns dealt into LANES channels: column g * LANES + l is lane l.

    A row-major image already lies in memory as a channels-last (1, LANES, h, w / LANES) tensor, so this
    costs no copy but the padding to whole lane groups. Output lane l reads input lanes l + j, in its own
    group or the next, so the kernel becomes a banded (LANES, LANES, kh, spans) one: mostly zero weights,
    yet torch convolves 8 channels many times faster per output than 1. Column stride 1.
    """
    oh, ow = output_shape(tuple(X.shape), tuple(K.shape), padding, (row_stride, 1))
    spans, groups = lane_spans(K.shape[1]), -(-ow // LANES)
    width = LANES * (groups + spans - 1)
    (ph, pw), (h, w) = padding, X.shape
    x = F.pad(X, (pw, width - w - pw, ph, ph))
    lanes = x.reshape(1, h + 2 * ph, width // LANES, LANES).permute(0, 3, 1, 2)
    bias_lanes = torch.full((LANES,), bias, dtype=x.dtype, device=x.device)
    out = F.conv2d(lanes, banded_weight(K, spans), bias_lanes, stride=(row_stride, 1))  # (1, LANES, oh, groups)
    return out.permute(0, 2, 3, 1).reshape(oh, groups * LANES)[:, :ow]  # no copy: the output is channels-last


def banded_weight(K: torch.Tensor, spans: int) -> torch.Tensor:
    """weight[out lane, in lane, i, span] = K[i, in lane + LANES * span - out lane], 0 where that is off K."""
    lane = torch.arange(LANES, device=K.device)
    j = lane[None, :, None] + LANES * torch.arange(spans, device=K.device) - lane[:, None, None]
    on_kernel = (j >= 0) & (j < K.shape[1])
    return torch.where(on_kernel, K[:, j.clamp(0, K.shape[1] - 1)], 0.0).permute(1, 2, 0, 3)


def conv2d(X: torch.Tensor, K: torch.Tensor, padding: Pair, stride: Pair) -> torch.Tensor:
    """torch's own convolution, single channel: differentiable, any stride, fastest for small outputs."""
    return F.conv2d(X[None, None], K[None, None], padding=padding, stride=stride)[0, 0]  # (1, 1, oh, ow) -> (oh, ow)
