"""The request models of HTTP API v1: every check a careful user expects, in one place.

Requests are validated from already-parsed JSON. Numbers are strict (no strings,
booleans, NaN or infinities) and each error carries the location of the fault,
so the API can point at it. Server limits come in through the validation
context as a `Limits` (shared.shapes); without one (in the worker) nothing is limited.
"""

import math
from typing import Annotated, Any, Literal

import numpy as np
from annotated_types import Ge, Le, Lt, MaxLen, MinLen
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictBool,
    TypeAdapter,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared import budget
from shared.arrays import serialize_array, to_array, wire_type
from shared.jsontypes import Number, fault, invalid, whole
from shared.shapes import (
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_SIDE,
    channel_fault,
    channels_out_shape,
    check_output,
    check_time,
    check_work,
    fmt,
    limits_of,
    multiply_adds,
)


def _broadcast(value: Any) -> Any:
    """Let a pair be given as one integer meaning the same for both dimensions."""
    return (value, value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _pair_schema(minimum: int) -> WithJsonSchema:
    """Document what _broadcast accepts: one integer, or a pair of them.

    The pair as items with minItems and maxItems, not prefixItems with `items: false`: client generators
    (openapi-python-client) refuse a boolean schema.
    """
    integer = {"type": "integer", "minimum": minimum, "maximum": MAX_SIDE}
    pair = {"type": "array", "items": integer, "minItems": 2, "maxItems": 2}
    return WithJsonSchema({"anyOf": [integer, pair]})


Side = whole(Ge(1), Le(MAX_SIDE))
Margin = whole(Ge(0), Le(MAX_SIDE))
NonNegativePair = Annotated[tuple[Margin, Margin], BeforeValidator(_broadcast), _pair_schema(0)]
PositivePair = Annotated[tuple[Side, Side], BeforeValidator(_broadcast), _pair_schema(1)]


def _array_field(*dimensions: int) -> Any:
    """An array field taking these numbers of dimensions in either wire form (shared.arrays); in the model a
    float32 numpy array, stored in the base64 form."""

    def validate(value: Any, info: ValidationInfo) -> np.ndarray:
        return to_array(value, limits_of(info).max_matrix_elements, dimensions)

    return Annotated[
        Any, PlainValidator(validate, json_schema_input_type=wire_type(dimensions)), PlainSerializer(serialize_array)
    ]


_NUMBER, _NUMBERS = TypeAdapter(Number), TypeAdapter(Annotated[list[Number], MinLen(1)])


def _number_or_numbers(value: Any) -> float | list[float]:
    """One number, or a list of them; the faults of whichever the value looks like (not of both, as a union's)."""
    return (_NUMBERS if isinstance(value, list) else _NUMBER).validate_python(value)


NumberOrNumbers = Annotated[
    Any,
    PlainValidator(_number_or_numbers),
    WithJsonSchema({"anyOf": [_NUMBER.json_schema(), _NUMBERS.json_schema()]}),
]
Image = _array_field(2, 3)  # H x W, or C x H x W
Kernel = _array_field(2, 3, 4)  # kh x kw, C x kh x kw (one output channel), or O x C x kh x kw


class Request(BaseModel):
    """Base of request bodies: unknown fields are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    result_format: Literal["lists", "base64"] = Field(
        "lists", description="how the result's matrices are written: nested lists, or base64 float32 arrays"
    )
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="the workers to run on: auto sends big jobs to GPU workers (if the server has them)"
    )


class CorrelationRequest(Request):
    """POST /v1/correlations: cross-correlate `input` with `kernel`."""

    input: Image = Field(description="H x W input matrix, or C x H x W with channels")
    kernel: Kernel = Field(
        description="kh x kw; C x kh x kw (the per-channel correlations summed into one output); "
        "or O x C x kh x kw (O output channels). Must fit inside the padded input"
    )
    bias: NumberOrNumbers = Field(
        0.0, description="added to every output element; or one value per output channel of an O x C x kh x kw kernel"
    )
    padding: NonNegativePair = Field((0, 0), description="zero padding: one integer or [ph, pw]")
    stride: PositivePair = Field((1, 1), description="step of the window: one integer or [sh, sw]")

    @model_validator(mode="after")
    def _shapes_agree(self, info: ValidationInfo) -> "CorrelationRequest":
        problem = channel_fault(self.input.shape, self.kernel.shape, "kernel") or self._size_fault()
        if problem is None and isinstance(self.bias, list):
            problem = self._bias_fault()
        if problem is not None:
            raise invalid(type(self).__name__, problem)
        check_output(self.output_shape, info, "padding" if any(self.padding) else "kernel")
        check_work(self.output_shape, self.kernel.shape, 1, info)
        check_time(self.estimated_seconds, info, f"{self.work} multiply-adds")
        return self

    def _size_fault(self) -> InitErrorDetails | None:
        padded = (self.input.shape[-2] + 2 * self.padding[0], self.input.shape[-1] + 2 * self.padding[1])
        kernel = self.kernel.shape[-2:]
        if kernel[0] > padded[0] or kernel[1] > padded[1]:
            message = (
                f"kernel is {fmt(kernel)} but the input padded by {list(self.padding)} is {fmt(padded)}: "
                "the kernel must fit inside it"
            )
            return fault(("kernel",), "kernel_too_large", message)
        return None

    def _bias_fault(self) -> InitErrorDetails | None:
        if self.kernel.ndim != 4:
            message = "one bias per output channel needs an O x C x kh x kw kernel; give one number"
            return fault(("bias",), "bias_per_channel", message)
        if len(self.bias) != self.kernel.shape[0]:
            message = (
                f"bias has {len(self.bias)} values but the kernel has {self.kernel.shape[0]} output channels "
                f"(dimension 0 of its {fmt(self.kernel.shape)})"
            )
            return fault(("bias",), "bias_length_mismatch", message)
        return None

    @property
    def output_shape(self) -> tuple[int, ...]:
        return channels_out_shape(self.input.shape, self.kernel.shape, self.padding, self.stride)

    @property
    def work(self) -> int:
        return multiply_adds(self.output_shape, self.kernel.shape, 1)

    @property
    def estimated_seconds(self) -> float:
        return budget.correlation_seconds(self.work, self.input.size + math.prod(self.output_shape))


class TrainingPair(BaseModel):
    """One example of a training on several pairs: an input and the output to reproduce from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Image = Field(description="X: H x W, or C x H x W")
    target: Image | None = Field(None, description="Y: oh x ow, or O x oh x ow; leave out with target_kernel")


class KernelTrainingRequest(Request):
    """POST /v1/kernel-trainings: learn the kernel that maps inputs to targets (the seed's loop, grown)."""

    # One pair (input with target or target_kernel) or several (pairs), in the schema as in the validator. Inside an
    # allOf: a oneOf beside the properties makes client generators see three models instead of this one.
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "oneOf": [
                        {"required": ["input", "target"], "properties": {"pairs": {"type": "null"}}},
                        {"required": ["input", "target_kernel"], "properties": {"pairs": {"type": "null"}}},
                        {"required": ["pairs"], "properties": {"input": {"type": "null"}, "target": {"type": "null"}}},
                    ]
                }
            ]
        }
    )

    input: Image | None = Field(None, description="X, the H x W (or C x H x W) input; or give pairs")
    target: Image | None = Field(None, description="Y, the output to reproduce; give this or target_kernel")
    pairs: Annotated[list[TrainingPair], MinLen(1)] | None = Field(
        None, description="several (input, target) examples of one shape, instead of input and target"
    )
    target_kernel: Kernel | None = Field(None, description="K*: the worker makes each target Y = corr2d(X, K*)")
    kernel_size: PositivePair | None = Field(
        None, description="[kh, kw]; the kernel's channels follow the input's and the target's"
    )
    kernel_shape: Annotated[list[Side], MinLen(2), MaxLen(4)] | None = Field(
        None, description="the whole kernel shape: [kh, kw], [C, kh, kw] or [O, C, kh, kw]; instead of kernel_size"
    )
    lr: Annotated[Number, Field(gt=0)] = Field(0.03, description="learning rate")
    epochs: whole(Ge(1), Le(MAX_EPOCHS)) = Field(20, description="passes over the pairs")
    bias: StrictBool = Field(False, description="learn a bias too: one number, or one per output channel")
    seed: whole(Ge(0), Le(2**63 - 1)) = Field(0, description="seed of the initial kernel and shuffles")
    optimizer: Literal["sgd", "momentum", "adam"] = Field(
        "sgd", description="sgd: the seed's plain gradient descent; momentum (see momentum); adam"
    )
    momentum: Annotated[Number, Ge(0), Lt(1)] = Field(0.9, description="the momentum of optimizer=momentum")
    loss: Literal["sum", "mean"] = Field("sum", description="of the squared errors: sum (the seed's) or mean")
    tolerance: Annotated[Number, Ge(0)] | None = Field(
        None, description="stop after the first epoch whose loss is below this; epochs_run says how many ran"
    )
    batch_size: whole(Ge(1), Le(MAX_BATCH_SIZE)) | None = Field(
        None, description="pairs per step of the optimizer; all of them when left out"
    )
    shuffle: StrictBool = Field(False, description="a new order of the pairs every epoch, drawn from seed")

    @field_validator("epochs")
    @classmethod
    def _epochs_within_limit(cls, epochs: int, info: ValidationInfo) -> int:
        limit = limits_of(info).max_epochs
        if limit is not None and epochs > limit:
            raise PydanticCustomError(
                "epochs_over_limit",
                "{epochs} epochs is over this server's limit of {limit} (MAX_EPOCHS)",
                {"epochs": epochs, "limit": limit},
            )
        return epochs

    @model_validator(mode="after")
    def _shapes_agree(self, info: ValidationInfo) -> "KernelTrainingRequest":
        problem = self._examples_fault() or self._kernel_fault() or self._targets_fault()
        if problem is not None:
            raise invalid(type(self).__name__, problem)
        examples = len(self.examples)
        why = "epochs" if examples == 1 else f"epoch-pairs ({self.epochs} epochs x {examples} pairs)"
        check_work(self.output_shape, self.resolved_kernel_shape, self.epochs * examples, info, why)
        steps = "" if self.closed_form else f", {self.steps_per_epoch} optimizer steps each"
        check_time(self.estimated_seconds, info, f"{self.epochs} epochs over {examples} pairs{steps}")
        return self

    @property
    def closed_form(self) -> bool:
        """The seed's own case, which the worker trains by a closed-form gradient (services.fit)."""
        return (
            len(self.examples) == 1
            and len(self.resolved_kernel_shape) == 2
            and self.optimizer == "sgd"
            and self.loss == "sum"
            and self.batch_size in (None, 1)
        )

    @property
    def steps_per_epoch(self) -> int:
        pairs = len(self.examples)
        return math.ceil(pairs / (self.batch_size or pairs))

    @property
    def estimated_seconds(self) -> float:
        kernel = self.resolved_kernel_shape
        per_pair = multiply_adds(self.output_shape, kernel, 1)
        taps = math.prod(kernel)
        pairs = len(self.examples)
        outputs = math.prod(self.output_shape)
        elements = pairs * (self.examples[0][0].size + outputs)
        return budget.training_seconds(
            multiply_adds_per_pair=per_pair,
            output_elements_per_pair=outputs,
            elements=elements,
            taps=taps,
            pairs=pairs,
            epochs=self.epochs,
            batch_size=self.batch_size,
            closed_form=self.closed_form,
        )

    @property
    def examples(self) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """(input, target) of every pair; the target is None with target_kernel."""
        if self.pairs is not None:
            return [(pair.input, pair.target) for pair in self.pairs]
        return [(self.input, self.target)]

    def _where(self, index: int, field: str) -> tuple[str | int, ...]:
        return ("pairs", index, field) if self.pairs is not None else (field,)

    def _examples_fault(self) -> InitErrorDetails | None:
        if (self.pairs is None) == (self.input is None):
            which = "both" if self.pairs is not None else "neither"
            return fault(("pairs",), "input_xor_pairs", f"give input (with its target) or pairs, not {which}")
        if self.pairs is not None and self.target is not None:
            return fault(("target",), "target_with_pairs", "with pairs, each pair carries its own target")
        examples = self.examples
        first = examples[0][0]
        for index, (example, target) in enumerate(examples):
            if (target is None) == (self.target_kernel is None):
                which = "both" if target is not None else "neither"
                return fault(
                    self._where(index, "target"),
                    "target_xor_target_kernel",
                    f"give exactly one of target and target_kernel, not {which}",
                )
            if example.shape != first.shape:
                message = f"pairs[{index}].input is {fmt(example.shape)} but pairs[0].input is {fmt(first.shape)}"
                return fault(self._where(index, "input"), "input_shape_mismatch", message)
        return None

    def _kernel_fault(self) -> InitErrorDetails | None:
        if self.kernel_size is not None and self.kernel_shape is not None:
            return fault(("kernel_shape",), "kernel_size_and_shape", "give kernel_size or kernel_shape, not both")
        if self.target_kernel is None and self.kernel_size is None and self.kernel_shape is None:
            return fault(("kernel_size",), "missing", "kernel_size is required with target")
        if self.target_kernel is not None:
            given = self.kernel_shape or self.kernel_size
            wanted = self.target_kernel.shape if self.kernel_shape is not None else self.target_kernel.shape[-2:]
            if given is not None and tuple(given) != tuple(wanted):
                where = "kernel_shape" if self.kernel_shape is not None else "kernel_size"
                message = (
                    f"{where} {list(given)} disagrees with target_kernel, which is {fmt(self.target_kernel.shape)}"
                )
                return fault((where,), "kernel_size_mismatch", message)
        size, where = self.resolved_kernel_shape, self._kernel_field
        channels = channel_fault(self.examples[0][0].shape, size, where)
        if channels is not None:
            return channels
        spatial, image = size[-2:], self.examples[0][0].shape[-2:]
        if spatial[0] > image[0] or spatial[1] > image[1]:
            message = f"a {fmt(spatial)} kernel does not fit inside the {fmt(image)} input"
            return fault((where,), "kernel_too_large", message)
        return None

    def _targets_fault(self) -> InitErrorDetails | None:
        for index, (example, target) in enumerate(self.examples):
            if target is not None and target.shape != self.output_shape:
                message = (
                    f"target is {fmt(target.shape)} but a {fmt(self.resolved_kernel_shape)} kernel on the "
                    f"{fmt(example.shape)} input gives {fmt(self.output_shape)}"
                )
                return fault(self._where(index, "target"), "target_shape_mismatch", message)
        return None

    @property
    def _kernel_field(self) -> str:
        if self.target_kernel is not None:
            return "target_kernel"
        return "kernel_shape" if self.kernel_shape is not None else "kernel_size"

    @property
    def resolved_kernel_shape(self) -> tuple[int, ...]:
        """The kernel's whole shape: given, K*'s, or kernel_size with the channels of the input and the target."""
        if self.target_kernel is not None:
            return self.target_kernel.shape
        if self.kernel_shape is not None:
            return tuple(self.kernel_shape)
        example, target = self.examples[0]
        if target.ndim == 3:
            channels = example.shape[0] if example.ndim == 3 else 1
            return (target.shape[0], channels, *self.kernel_size)
        return (example.shape[0], *self.kernel_size) if example.ndim == 3 else tuple(self.kernel_size)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return channels_out_shape(self.examples[0][0].shape, self.resolved_kernel_shape, (0, 0), (1, 1))

    @property
    def work(self) -> int:
        return multiply_adds(self.output_shape, self.resolved_kernel_shape, self.epochs * len(self.examples))
