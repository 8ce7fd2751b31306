"""Two-dimensional cross-correlation: the seed's reference loop and the fast paths users run."""

from typing import Literal

import torch
import torch.nn.functional as F

Pair = tuple[int, int]
Path = Literal["shift_add", "band_conv", "conv2d"]

BANDS = 8
"""band_conv cuts the input into this many bands, one channel each: one AVX2 register holds 8 float32."""

# strategy() picks the path by this cost model: microseconds on one thread, least-squares fits to medians measured
# on the project's 2-core EPYC VM (torch 2.13 CPU, glibc malloc defaults) over 152 shapes: outputs 8x8 to 1024x1024,
# kernels 1x1 to 21x21, 1x31 and 31x1, strides 1 and 2. Its pick ran 12 % slower than the fastest path on average,
# worst with 1x1 kernels (erratic in conv2d). Measured at 1024x1024 outputs, 3x3: shift_add 1.8 ms, band_conv
# 2.6 ms, conv2d 39 ms; 11x11: band_conv 7.4 ms, shift_add ~20 ms, conv2d ~80 ms.
SHIFT_ADD_US = (65.0, 6.5, 0.16e-3)  # per call, per tap, per tap and output
BAND_CONV_US = (210.0, 1.0e-3, 0.057e-3)  # per call, per input element spanned, per tap and output
CONV2D_US = (21.0, 0.61e-3)  # per call, per tap and output


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
    """Name the path corr2d takes for this shape: the cheapest by the cost model above; conv2d under autograd."""
    if grad:
        return "conv2d"
    costs = estimated_us(out_shape, kernel_shape, stride)
    return min(costs, key=costs.__getitem__)


def estimated_us(out_shape: Pair, kernel_shape: Pair, stride: Pair) -> dict[Path, float]:
    """Each path's cost in microseconds on one thread, by the cost model above."""
    outputs, taps = out_shape[0] * out_shape[1], kernel_shape[0] * kernel_shape[1]
    read = outputs * stride[0] * stride[1]  # about the input elements the output spans
    costs: dict[Path, float] = {
        "conv2d": CONV2D_US[0] + outputs * taps * CONV2D_US[1],
        "band_conv": BAND_CONV_US[0] + read * BAND_CONV_US[1] + outputs * taps * BAND_CONV_US[2],
    }
    if stride[1] == 1:  # strided columns would make every tap's pass a gather
        costs["shift_add"] = SHIFT_ADD_US[0] + taps * (SHIFT_ADD_US[1] + outputs * SHIFT_ADD_US[2])
    return costs


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

    The result may be a view of a slightly larger buffer (see shift_add and band_conv).
    """
    out_shape = checked_output_shape(tuple(X.shape), tuple(K.shape), padding, stride)
    dtype = torch.result_type(X, K)
    X, K = X.to(dtype), K.to(dtype)
    tracked = (X, K, bias) if isinstance(bias, torch.Tensor) else (X, K)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in tracked)
    path = strategy(out_shape, tuple(K.shape), stride, grad=grad)
    if path == "conv2d":
        return conv2d(X, K, padding, stride) + bias
    compute = shift_add if path == "shift_add" else band_conv
    if isinstance(bias, torch.Tensor):
        return compute(X, K, padding, stride) + bias
    return compute(X, K, padding, stride, bias)


def shift_add(X: torch.Tensor, K: torch.Tensor, padding: Pair, stride: Pair, bias: float = 0.0) -> torch.Tensor:
    """One scaled add of a shifted window of the input per kernel tap, scaled by Python floats: no autograd.

    At stride 1 the output keeps the input's row pitch (its last kw - 1 columns are junk, cut off by the
    returned view), so that every tap's window is one contiguous run of the input: a 1-D axpy over the
    whole output. The cost is memory traffic: one pass over the output per tap.
    """
    oh, ow = output_shape(tuple(X.shape), tuple(K.shape), padding, stride)
    x = zero_pad(X, padding).contiguous()
    width, scales = x.shape[1], K.flatten().tolist()
    offset = torch.tensor(bias, dtype=x.dtype, device=x.device)
    if stride == (1, 1):
        out = torch.empty((oh, width), dtype=x.dtype, device=x.device)
        flat = out.view(-1)[: flat_length((oh, ow), width)]
        accumulate(flat, tap_windows(x, tuple(K.shape), flat.shape, (1,)), scales, offset)
        return out[:, :ow]
    out = torch.empty((oh, ow), dtype=x.dtype, device=x.device)
    accumulate(out, tap_windows(x, tuple(K.shape), (oh, ow), (stride[0] * width, stride[1])), scales, offset)
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


def band_conv(X: torch.Tensor, K: torch.Tensor, padding: Pair, stride: Pair, bias: float = 0.0) -> torch.Tensor:
    """torch's depthwise convolution over the input cut into BANDS horizontal bands, one channel each.

    A single-channel convolution leaves all but one of the CPU's SIMD lanes idle; as BANDS channels (bands
    overlapping by the kernel's reach) every lane works, all taps in one pass. The bands' outputs are the
    output's consecutive row blocks, so the only copy is the one cutting the bands.
    """
    oh, ow = output_shape(tuple(X.shape), tuple(K.shape), padding, stride)
    x = zero_pad(X, padding).contiguous()
    rows = -(-oh // BANDS)  # output rows per band; the last band's spare rows are cut off
    bands = cut_bands(x, rows * stride[0], (rows - 1) * stride[0] + K.shape[0])
    weight = K[None, None].expand(BANDS, 1, *K.shape)
    offset = torch.full((BANDS,), bias, dtype=x.dtype, device=x.device)
    out = F.conv2d(bands[None], weight, offset, stride=stride, groups=BANDS)  # (1, BANDS, rows, ow)
    return out.reshape(BANDS * rows, ow)[:oh]


def cut_bands(x: torch.Tensor, step: int, height: int) -> torch.Tensor:
    """Rows b * step to b * step + height of x for each band b < BANDS, as (BANDS, height, w): zeros past x."""
    h, w = x.shape
    bands = x.new_empty((BANDS, height, w))
    inside = min(BANDS, (h - height) // step + 1)  # >= 1: the first band fits
    bands[:inside] = x.as_strided((inside, height, w), (step * w, w, 1))
    for band in range(inside, BANDS):
        left = max(0, h - band * step)
        bands[band, :left] = x[band * step :]
        bands[band, left:] = 0
    return bands


def conv2d(X: torch.Tensor, K: torch.Tensor, padding: Pair, stride: Pair) -> torch.Tensor:
    """torch's own convolution, single channel: differentiable, any stride, fastest for small outputs."""
    return F.conv2d(X[None, None], K[None, None], padding=padding, stride=stride)[0, 0]  # (1, 1, oh, ow) -> (oh, ow)
