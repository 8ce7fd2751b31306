"""The request and response models of HTTP API v1: every check a careful user expects, in one place.

Requests are validated from already-parsed JSON. Numbers are strict (no strings,
booleans, NaN or infinities) and each error carries the location of the fault,
so the API can point at it. Server limits come in through the validation
context as a `Limits`; without one (in the worker) nothing is limited.
"""

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from annotated_types import Ge, Le
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictBool,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.arrays import MATRIX_SCHEMA, Base64Array, to_array, to_base64
from shared.jsontypes import Integer, Number, fault, invalid


@dataclass(frozen=True)
class Limits:
    """Server limits that requests are checked against (None: unlimited)."""

    max_matrix_elements: int | None = None
    max_epochs: int | None = None
    max_work: int | None = None  # output elements x kernel taps x epochs


def _limits(info: ValidationInfo) -> Limits:
    """The limits the caller validates against; none at all without a context (in the worker)."""
    return info.context if isinstance(info.context, Limits) else Limits()


def _broadcast(value: Any) -> Any:
    """Let a pair be given as one integer meaning the same for both dimensions."""
    return (value, value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _pair_schema(minimum: int) -> WithJsonSchema:
    """Document what _broadcast accepts: one integer, or a pair of them."""
    integer = {"type": "integer", "minimum": minimum}
    pair = {"type": "array", "prefixItems": [integer, integer], "items": False, "minItems": 2}
    return WithJsonSchema({"anyOf": [integer, pair]})


NonNegativePair = Annotated[
    tuple[Annotated[Integer, Ge(0)], Annotated[Integer, Ge(0)]], BeforeValidator(_broadcast), _pair_schema(0)
]
PositivePair = Annotated[
    tuple[Annotated[Integer, Ge(1)], Annotated[Integer, Ge(1)]], BeforeValidator(_broadcast), _pair_schema(1)
]


def _matrix(value: Any, info: ValidationInfo) -> np.ndarray:
    return to_array(value, _limits(info).max_matrix_elements)


# A matrix in either wire form (shared.arrays); in the model a float32 numpy array, stored in the base64 form.
Matrix = Annotated[Any, PlainValidator(_matrix), PlainSerializer(to_base64), WithJsonSchema(MATRIX_SCHEMA)]


def output_shape(
    input_shape: tuple[int, int],
    kernel_shape: tuple[int, int],
    padding: tuple[int, int] = (0, 0),
    stride: tuple[int, int] = (1, 1),
) -> tuple[int, int]:
    """Return (oh, ow) of a correlation; a dimension < 1 means the kernel does not fit."""
    (h, w), (kh, kw), (ph, pw), (sh, sw) = input_shape, kernel_shape, padding, stride
    return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


def _fmt(pair: tuple[int, int]) -> str:
    return f"{pair[0]} x {pair[1]}"


def check_work(out_shape: tuple[int, int], kernel_shape: tuple[int, int], epochs: int, info: ValidationInfo) -> None:
    """Refuse a job whose multiply-adds (output elements x kernel taps x epochs) exceed the server's budget."""
    budget = _limits(info).max_work
    work = out_shape[0] * out_shape[1] * kernel_shape[0] * kernel_shape[1] * epochs
    if budget is not None and work > budget:
        message = (
            f"the job needs {work} multiply-adds (output {_fmt(out_shape)} x kernel {_fmt(kernel_shape)} x {epochs} "
            f"epochs), over this server's budget of {budget} (MAX_WORK)"
        )
        raise invalid("Request", fault((), "work_over_budget", message))


class Request(BaseModel):
    """Base of request bodies: unknown fields are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    result_format: Literal["lists", "base64"] = Field(
        "lists", description="how the result's matrices are written: nested lists, or base64 float32 arrays"
    )


class CorrelationRequest(Request):
    """POST /v1/correlations: cross-correlate `input` with `kernel`."""

    input: Matrix = Field(description="H x W input matrix")
    kernel: Matrix = Field(description="kh x kw kernel; must fit inside the padded input")
    bias: Number = Field(0.0, description="scalar added to every output element")
    padding: NonNegativePair = Field((0, 0), description="zero padding: one integer or [ph, pw]")
    stride: PositivePair = Field((1, 1), description="step of the window: one integer or [sh, sw]")

    @model_validator(mode="after")
    def _kernel_fits(self) -> "CorrelationRequest":
        padded = (self.input.shape[0] + 2 * self.padding[0], self.input.shape[1] + 2 * self.padding[1])
        kernel = self.kernel.shape
        if kernel[0] > padded[0] or kernel[1] > padded[1]:
            message = (
                f"kernel is {_fmt(kernel)} but the input padded by {list(self.padding)} is {_fmt(padded)}: "
                "the kernel must fit inside it"
            )
            raise invalid(type(self).__name__, fault(("kernel",), "kernel_too_large", message))
        return self

    @model_validator(mode="after")
    def _within_work_budget(self, info: ValidationInfo) -> "CorrelationRequest":
        check_work(self.output_shape, self.kernel.shape, 1, info)
        return self

    @property
    def output_shape(self) -> tuple[int, int]:
        return output_shape(self.input.shape, self.kernel.shape, self.padding, self.stride)


class KernelTrainingRequest(Request):
    """POST /v1/kernel-trainings: learn the kernel that maps `input` to `target` (the seed's training loop)."""

    # Exactly one of target (with kernel_size) and target_kernel, in the schema as in the validator.
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["target", "kernel_size"],
                    "properties": {"target": {"type": "array"}, "target_kernel": {"type": "null"}},
                },
                {
                    "required": ["target_kernel"],
                    "properties": {"target_kernel": {"type": "array"}, "target": {"type": "null"}},
                },
            ]
        }
    )

    input: Matrix = Field(description="X, the H x W input")
    target: Matrix | None = Field(None, description="Y, the output to reproduce; give this or target_kernel")
    target_kernel: Matrix | None = Field(None, description="K*: the worker makes Y = corr2d(X, K*)")
    kernel_size: PositivePair | None = Field(None, description="[kh, kw]: required with target, defaults to K*'s shape")
    lr: Annotated[Number, Field(gt=0)] = Field(0.03, description="learning rate of plain gradient descent")
    epochs: Annotated[Integer, Ge(1)] = Field(20, description="iterations of gradient descent")
    bias: StrictBool = Field(False, description="learn a scalar bias too")
    seed: Annotated[Integer, Ge(0), Le(2**63 - 1)] = Field(0, description="seed of the initial kernel")

    @field_validator("epochs")
    @classmethod
    def _epochs_within_limit(cls, epochs: int, info: ValidationInfo) -> int:
        limit = _limits(info).max_epochs
        if limit is not None and epochs > limit:
            raise PydanticCustomError(
                "epochs_over_limit",
                "{epochs} epochs is over this server's limit of {limit} (MAX_EPOCHS)",
                {"epochs": epochs, "limit": limit},
            )
        return epochs

    @model_validator(mode="after")
    def _shapes_agree(self, info: ValidationInfo) -> "KernelTrainingRequest":
        problem = self._shape_fault()
        if problem is not None:
            raise invalid(type(self).__name__, problem)
        check_work(self.output_shape, self.resolved_kernel_size, self.epochs, info)
        return self

    def _shape_fault(self) -> InitErrorDetails | None:
        if (self.target is None) == (self.target_kernel is None):
            which = "both" if self.target is not None else "neither"
            return fault(
                ("target",), "target_xor_target_kernel", f"give exactly one of target and target_kernel, not {which}"
            )
        if self.target is not None and self.kernel_size is None:
            return fault(("kernel_size",), "missing", "kernel_size is required with target")
        if self.target_kernel is not None and self.kernel_size not in (None, self.target_kernel.shape):
            message = (
                f"kernel_size {list(self.kernel_size)} disagrees with target_kernel, "
                f"which is {_fmt(self.target_kernel.shape)}"
            )
            return fault(("kernel_size",), "kernel_size_mismatch", message)
        size, where = self.resolved_kernel_size, "target_kernel" if self.target_kernel is not None else "kernel_size"
        if size[0] > self.input.shape[0] or size[1] > self.input.shape[1]:
            message = f"a {_fmt(size)} kernel does not fit inside the {_fmt(self.input.shape)} input"
            return fault((where,), "kernel_too_large", message)
        if self.target is not None and self.target.shape != self.output_shape:
            message = (
                f"target is {_fmt(self.target.shape)} but a {_fmt(size)} kernel on the "
                f"{_fmt(self.input.shape)} input gives {_fmt(self.output_shape)}"
            )
            return fault(("target",), "target_shape_mismatch", message)
        return None

    @property
    def resolved_kernel_size(self) -> tuple[int, int]:
        return self.kernel_size if self.kernel_size is not None else self.target_kernel.shape

    @property
    def output_shape(self) -> tuple[int, int]:
        return output_shape(self.input.shape, self.resolved_kernel_size)


JobKind = Literal["correlation", "kernel_training"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class FieldError(BaseModel):
    loc: str = Field(description="JSON pointer to the fault in the request, e.g. /input/3")
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem: every error of the API, and the error of a failed job."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = Field(None, description="identifies this occurrence, e.g. in the server's logs")
    errors: list[FieldError] | None = None


class CorrelationResult(BaseModel):
    output: list[list[float]] | Base64Array
    shape: tuple[int, int]


class TrainingResult(BaseModel):
    kernel: list[list[float]] | Base64Array
    bias: float | None
    loss: float
    loss_history: list[float]
    epochs_run: int


class Progress(BaseModel):
    epoch: int
    epochs: int
    loss: float | None


class Job(BaseModel):
    """GET /v1/jobs/<id>: one job, as the job store holds it."""

    id: str
    kind: JobKind
    status: JobStatus
    attempts: int = Field(description="how many times a worker has started the job (more than 1 after a redelivery)")
    created_at: str
    started_at: str | None
    finished_at: str | None
    expires_at: str = Field(description="when the job, its result and loss history will be forgotten")
    progress: Progress | None
    result: CorrelationResult | TrainingResult | None
    error: Problem | None


class JobSummary(BaseModel):
    """A job in a list: everything but its result."""

    id: str
    kind: JobKind
    status: JobStatus
    attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    expires_at: str
    progress: Progress | None
    error: Problem | None


class JobList(BaseModel):
    """GET /v1/jobs: the caller's jobs, newest first."""

    jobs: list[JobSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class LossPage(BaseModel):
    """GET /v1/jobs/<id>/loss?since=k: the losses of the epochs after k."""

    losses: list[float]
    since: int
    epochs_done: int
    epochs: int
    status: JobStatus
