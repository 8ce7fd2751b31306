"""Arrays on the wire: nested JSON lists or base64 arrays, validated into float32 numpy arrays.

An array (a matrix, or one with channels: C x H x W, O x C x kh x kw) arrives
either as nested lists of numbers, `[[1, 2], [3, 4]]`, or as
`{"shape": [h, w], "dtype": "float32", "data": "<base64, little-endian, row-major>"}`
(dtype float32 or float64). Either way it becomes a C-contiguous float32 array,
checked without Python work per element (pydantic-core and numpy do the loops),
and every fault carries its location (`/input/3/1`, `/input/data`). Stored, an
array is its raw bytes beside the request's JSON (shared.packing): a worker reads
it in microseconds instead of parsing a million numbers again.
"""

from typing import Annotated, Any, Literal, Union

import numpy as np
import orjson
import pybase64
from annotated_types import Ge, MaxLen, MinLen
from pydantic import BaseModel, ConfigDict, Field, SerializationInfo, StrictStr, TypeAdapter

from shared.jsontypes import FLOAT32_MAX, Number, fault, invalid, whole

DTYPES = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}
MAX_DIMENSIONS = 4


def nested_type(dimensions: int) -> Any:
    """Non-empty lists nested `dimensions` deep around strict float32 numbers."""
    element: Any = Number
    for _ in range(dimensions):
        element = Annotated[list[element], MinLen(1)]
    return element


_NESTED = {dimensions: TypeAdapter(nested_type(dimensions)) for dimensions in range(2, MAX_DIMENSIONS + 1)}


class Base64Array(BaseModel):
    """The base64 form of an array."""

    model_config = ConfigDict(extra="forbid")

    shape: Annotated[list[whole(Ge(1))], MinLen(2), MaxLen(MAX_DIMENSIONS)]
    dtype: Literal["float32", "float64"] = "float32"
    data: StrictStr = Field(json_schema_extra={"contentEncoding": "base64"})


def to_array(value: Any, max_elements: int | None = None, dimensions: tuple[int, ...] = (2,)) -> np.ndarray:
    """Validate an array in either form into float32 with one of `dimensions`; raise ValidationError at the fault.

    A numpy array (one the server made itself, from an uploaded image) is taken as it is, its size checked.
    """
    if isinstance(value, np.ndarray):
        if value.ndim not in dimensions:
            raise _wrong_dimensions(value.ndim, dimensions, ())
        _check_size(value.shape, max_elements)
        return np.ascontiguousarray(value, dtype=np.float32)
    if isinstance(value, dict):
        raw = value.get("data")
        decoded = raw if isinstance(raw, Decoded) else None  # decoded already, straight from the body
        spec = Base64Array.model_validate(value | {"data": ""} if decoded is not None else value)
        if len(spec.shape) not in dimensions:
            raise _wrong_dimensions(len(spec.shape), dimensions, ("shape",))
        _check_size(spec.shape, max_elements)
        return _decode(spec, decoded)
    depth = _depth(value)
    if depth > dimensions[-1]:
        raise _wrong_dimensions(depth, dimensions, ())
    depth = max(depth, dimensions[0])
    nested = _NESTED[depth].validate_python(value)  # too shallow: fails at the first number where a list belongs
    shape = _shape(nested, depth)
    _check_size(shape, max_elements)
    return np.array(nested, dtype=np.float32)


def _depth(value: Any) -> int:
    """How deep the first elements nest (the dimensions the array claims)."""
    depth = 0
    while isinstance(value, list) and value and depth <= MAX_DIMENSIONS:
        value, depth = value[0], depth + 1
    return depth


def _shape(nested: list, dimensions: int) -> tuple[int, ...]:
    """The shape of validated nested lists, refusing ragged ones at the first list whose length differs.

    Python looks at each list, never at each number: the rows are the last lists it expands.
    """
    shape, level = [], [((), nested)]
    for depth in range(dimensions):
        size = len(level[0][1])
        for loc, items in level:
            if len(items) != size:
                kind = "row" if depth == dimensions - 1 else "list"
                message = (
                    f"{_name(kind, loc)} has length {len(items)} but {_name(kind, level[0][0])} has length {size}: "
                    f"all {kind}s {'' if depth == dimensions - 1 else 'at one depth '}must be the same length"
                )
                raise invalid("Array", fault(loc, "ragged_matrix", message))
        shape.append(size)
        if depth < dimensions - 1:
            level = [((*loc, index), item) for loc, items in level for index, item in enumerate(items)]
    return tuple(shape)


def _name(kind: str, loc: tuple[int, ...]) -> str:
    return f"{kind} {loc[0] if len(loc) == 1 else list(loc)}"


def _wrong_dimensions(got: int, dimensions: tuple[int, ...], loc: tuple[str, ...]) -> Exception:
    wanted = " or ".join(str(count) for count in dimensions)
    count = got if got <= MAX_DIMENSIONS else f"more than {MAX_DIMENSIONS}"
    message = f"array has {count} dimensions but this field takes {wanted}"
    return invalid("Array", fault(loc, "wrong_dimensions", message))


def _check_size(shape: tuple[int, ...] | list[int], max_elements: int | None) -> None:
    elements = int(np.prod(shape))
    if max_elements is not None and elements > max_elements:
        message = (
            f"matrix is {' x '.join(map(str, shape))} = {elements} elements, "
            f"over this server's limit of {max_elements} (MAX_MATRIX_ELEMENTS)"
        )
        raise invalid("Matrix", fault((), "matrix_too_large", message))


class Decoded:
    """The bytes of a base64 `data` string that the API decoded from the request body itself, never a str."""

    def __init__(self, raw: bytearray):
        self.raw = raw


def _decode(spec: Base64Array, decoded: Decoded | None = None) -> np.ndarray:
    dtype = DTYPES[spec.dtype]
    expected = int(np.prod(spec.shape)) * dtype.itemsize
    try:
        raw = decoded.raw if decoded is not None else pybase64.b64decode_as_bytearray(spec.data, validate=True)
    except ValueError:
        raise invalid("Matrix", fault(("data",), "base64_invalid", "data is not valid base64")) from None
    if len(raw) != expected:
        message = (
            f"data holds {len(raw)} bytes but shape {list(spec.shape)} of {spec.dtype} needs {expected}: "
            "send the elements row by row, little-endian"
        )
        raise invalid("Matrix", fault(("data",), "base64_length_mismatch", message))
    array = np.frombuffer(raw, dtype=dtype).reshape(spec.shape)
    if dtype != np.float32:
        with np.errstate(over="ignore"):
            array = array.astype(np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        where = tuple(int(index) for index in np.argwhere(~finite)[0])
        message = (
            f"element {list(where)} is {array[where]} after conversion to float32: "
            f"elements must be finite and within +-{FLOAT32_MAX:.4g}"
        )
        raise invalid("Matrix", fault(("data",), "element_not_finite", message))
    return array


def to_base64(array: np.ndarray) -> dict:
    """The base64 form of a float32 array."""
    array = np.ascontiguousarray(array, dtype=DTYPES["float32"])
    return {"shape": list(array.shape), "dtype": "float32", "data": pybase64.b64encode_as_string(array)}


SPLICED = "convq.spliced"  # the serialization context's list of arrays that shared.packing stores raw
PLACEHOLDER = "\x00array-"  # + the array's index in that list: the `data` written in its place


def serialize_array(array: np.ndarray, info: SerializationInfo) -> dict:
    """to_base64, or, when shared.packing asks, a placeholder for the data that it stores raw beside the JSON."""
    spliced = info.context.get(SPLICED) if isinstance(info.context, dict) else None
    if spliced is None:
        return to_base64(array)
    spliced.append(np.ascontiguousarray(array, dtype=DTYPES["float32"]))
    return {"shape": list(array.shape), "dtype": "float32", "data": f"{PLACEHOLDER}{len(spliced) - 1}"}


def to_json(value: Any, form: Literal["lists", "base64"]) -> bytes:
    """Encode `value` as JSON with every numpy array in it written in `form` (lists: float32's shortest digits)."""
    if form == "lists":
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    return orjson.dumps(value, default=_base64_default)


def _base64_default(value: Any) -> dict:
    if isinstance(value, np.ndarray):
        return to_base64(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def wire_type(dimensions: tuple[int, ...]) -> Any:
    """The type an array field takes on the wire, for its JSON Schema: nested lists of each number of dimensions, or
    a Base64Array (a named schema of its own, which client generators turn into a model)."""
    return Union[*(nested_type(count) for count in dimensions), Base64Array]  # noqa: UP007 - built from a list
