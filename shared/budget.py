"""How long a job will run, estimated from its shapes before it is queued: arithmetic on calibrated constants.

The API never imports torch, so it cannot time a job; it multiplies what the job
asks for (multiply-adds, optimizer steps, epochs, kernel taps) by the cost of
each, measured on one worker process (one torch thread, as each prefork child
of a 2-core worker has) by `scripts/calibrate_budget.py`, which prints a new
`CPU_SPEED` when the hardware changes. The constants are about 3 times what an
idle machine measured, so the estimate errs long: a job it lets through finishes
within JOB_TIME_LIMIT_SECONDS on a machine whose cores are shared, and a job it
refuses would, on an idle one, have needed at least about a third of the limit.
"""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Speed:
    """Seconds each part of a job costs on one worker process."""

    job: float  # fixed cost of any job: loading the request, starting, storing the result
    element: float  # per element of the job's inputs and outputs: decoding, copying, encoding
    epoch: float  # per epoch: the loop, the loss read back, the progress callback
    tap: float  # per epoch per kernel tap of the closed-form (seed's) training: one pass and one dot product each
    step: float  # per optimizer step of the general training: a forward, a backward, an optimizer update
    correlation_mac: float  # per multiply-add of a correlation
    closed_form_mac: float  # per multiply-add of the forward pass in the seed's closed-form training (2 passes)
    autograd_mac: float  # per multiply-add of the forward pass in the general training (forward and backward)
    autograd_element: float  # per output element in the general training: the error, its square, their gradients


# Measured 2026-11-30 on the 2-core x86_64 development machine, one torch thread, by
# scripts/calibrate_budget.py, and set at about 3 times the idle machine's figures: a worker whose cores two
# other busy processes share still finishes what is let through. Idle: 0.25-0.85 ms per optimizer step
# (1000 pairs of 2 x 2, batches of 1), 40-70 us per closed-form epoch of 8 x 8 by 2 x 2, about 3 us per tap
# (128 x 128 by 32 x 32), 0.36 ns per closed-form multiply-add (512 x 512 by 3 x 3), 5-6 ns per multiply-add
# and 80-280 ns per output element with autograd (512 x 512 by 9 x 9; 2048 x 2048 by 2 x 1, adam), 0.18 ns
# per correlation multiply-add (1024 x 1024 by 31 x 31), 85 ns per element in and out. With the machine's
# load average at 13 (other test runs: 6 processes to a core), small jobs ran up to 3 times over these.
CPU_SPEED = Speed(
    job=0.05,
    element=200e-9,
    epoch=150e-6,
    tap=10e-6,
    step=2.5e-3,
    correlation_mac=0.5e-9,
    closed_form_mac=1.2e-9,
    autograd_mac=15e-9,
    autograd_element=500e-9,
)


def correlation_seconds(multiply_adds: int, elements: int, *, speed: Speed = CPU_SPEED) -> float:
    """The estimated run time of a correlation of this many multiply-adds, input and output elements."""
    return speed.job + elements * speed.element + multiply_adds * speed.correlation_mac


def training_seconds(
    *,
    multiply_adds_per_pair: int,
    output_elements_per_pair: int,
    elements: int,
    taps: int,
    pairs: int,
    epochs: int,
    batch_size: int | None,
    closed_form: bool,
    speed: Speed = CPU_SPEED,
) -> float:
    """The estimated run time of a training: `epochs` passes over `pairs`, in steps of `batch_size` pairs.

    Per pair, one forward pass makes `multiply_adds_per_pair` (output elements x kernel taps) and
    `output_elements_per_pair`; `elements` counts those of every input and target, `taps` the kernel's;
    `closed_form` is the seed's case (one 2-D pair, sgd, summed loss), which has no optimizer steps.
    """
    forward = multiply_adds_per_pair * pairs
    if closed_form:
        per_epoch = speed.epoch + taps * speed.tap + forward * speed.closed_form_mac
    else:
        steps = math.ceil(pairs / (batch_size or pairs))
        outputs = output_elements_per_pair * pairs
        per_epoch = speed.epoch + steps * speed.step + forward * speed.autograd_mac + outputs * speed.autograd_element
    return speed.job + elements * speed.element + epochs * per_epoch
