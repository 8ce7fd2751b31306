"""Shapes and limits: the output shape of a correlation, its work, and the server limits a request is checked against.

Used while validating requests (shared.request_models): a fault names the
dimensions involved, and the limits come in through the validation context as a
`Limits`; without one (in the worker) nothing is limited.
"""

import math
from dataclasses import dataclass

from pydantic import ValidationInfo
from pydantic_core import InitErrorDetails

from shared.jsontypes import fault, invalid

# Ceilings of the whole numbers a request may hold, in the schema for clients to see: far above what the
# element and time limits let through, low enough that no size computed from them overflows the core's int64.
MAX_SIDE = 2**24  # a kernel side, a stride, a padding
MAX_EPOCHS = 10**9
MAX_BATCH_SIZE = 2**24


@dataclass(frozen=True)
class Limits:
    """Server limits that requests are checked against (None: unlimited)."""

    max_matrix_elements: int | None = None
    max_epochs: int | None = None
    max_work: int | None = None  # output elements x kernel taps x epochs x pairs
    max_seconds: float | None = None  # the estimated run time a job may have (shared.budget)


def limits_of(info: ValidationInfo) -> Limits:
    """The limits the caller validates against; none at all without a context (in the worker)."""
    return info.context if isinstance(info.context, Limits) else Limits()


def output_shape(
    input_shape: tuple[int, int],
    kernel_shape: tuple[int, int],
    padding: tuple[int, int] = (0, 0),
    stride: tuple[int, int] = (1, 1),
) -> tuple[int, int]:
    """Return (oh, ow) of a correlation; a dimension < 1 means the kernel does not fit."""
    (h, w), (kh, kw), (ph, pw), (sh, sw) = input_shape, kernel_shape, padding, stride
    return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


def fmt(shape: tuple[int, ...]) -> str:
    """A shape as people write it: 3 x 4."""
    return " x ".join(map(str, shape))


def channels_out_shape(
    input_shape: tuple[int, ...], kernel_shape: tuple[int, ...], padding: tuple[int, int], stride: tuple[int, int]
) -> tuple[int, ...]:
    """(oh, ow), or (O, oh, ow) for an O x C x kh x kw kernel."""
    spatial = output_shape(input_shape[-2:], kernel_shape[-2:], padding, stride)
    return (kernel_shape[0], *spatial) if len(kernel_shape) == 4 else spatial


def channel_fault(input_shape: tuple[int, ...], kernel_shape: tuple[int, ...], where: str) -> InitErrorDetails | None:
    """Why the kernel's input channels do not match the input's, naming the dimensions; None if they do."""
    channels = input_shape[0] if len(input_shape) == 3 else 1
    if len(kernel_shape) == 2:
        if len(input_shape) == 3:
            message = (
                f"the input has {channels} channels (dimension 0 of its {fmt(input_shape)}), so {where} must be "
                f"C x kh x kw or O x C x kh x kw with C = {channels}, not {fmt(kernel_shape)}"
            )
            return fault((where,), "channel_mismatch", message)
        return None
    dimension = len(kernel_shape) - 3
    if kernel_shape[dimension] != channels:
        what = f"{channels} (dimension 0 of its {fmt(input_shape)})" if len(input_shape) == 3 else "1 (it is 2-D)"
        message = (
            f"{where} is {fmt(kernel_shape)}: {kernel_shape[dimension]} input channels in its dimension "
            f"{dimension}, but the input's channels are {what}"
        )
        return fault((where,), "channel_mismatch", message)
    return None


def multiply_adds(out_shape: tuple[int, ...], kernel_shape: tuple[int, ...], repeats: int) -> int:
    """Multiply-adds: output elements x kernel taps per output element x repeats (epochs, pairs)."""
    taps = math.prod(kernel_shape[1:] if len(kernel_shape) == 4 else kernel_shape)
    return math.prod(out_shape) * taps * repeats


def check_work(
    out_shape: tuple[int, ...], kernel_shape: tuple[int, ...], repeats: int, info: ValidationInfo, why: str = "epochs"
) -> None:
    """Refuse a job whose work exceeds the server's budget."""
    budget = limits_of(info).max_work
    work = multiply_adds(out_shape, kernel_shape, repeats)
    if budget is not None and work > budget:
        message = (
            f"the job needs {work} multiply-adds (output {fmt(out_shape)} x kernel {fmt(kernel_shape)} x {repeats} "
            f"{why}), over this server's budget of {budget} (MAX_WORK)"
        )
        raise invalid("Request", fault((), "work_over_budget", message))


def check_time(seconds: float, info: ValidationInfo, what: str) -> None:
    """Refuse a job whose estimated run time (shared.budget) would not end before the time limit stops it."""
    limit = limits_of(info).max_seconds
    if limit is not None and seconds > limit:
        message = (
            f"the job would run for about {seconds:,.0f} s ({what}, estimated for this server's CPU workers), "
            f"over the {limit:,.0f} s a job may run (the soft limit of JOB_TIME_LIMIT_SECONDS): "
            "ask for fewer epochs, fewer or smaller pairs, or bigger batches"
        )
        raise invalid("Request", fault((), "time_over_budget", message))


def check_output(out_shape: tuple[int, ...], info: ValidationInfo, where: str) -> None:
    """Refuse an output bigger than the matrices the server takes in (padding can make a 1 x 1 input's huge)."""
    limit = limits_of(info).max_matrix_elements
    elements = math.prod(out_shape)
    if limit is not None and elements > limit:
        message = (
            f"the output would be {fmt(out_shape)} = {elements} elements, "
            f"over this server's limit of {limit} (MAX_MATRIX_ELEMENTS)"
        )
        raise invalid("Request", fault((where,), "output_too_large", message))
