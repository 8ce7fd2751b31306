"""Matrices on the wire: nested JSON lists or base64 arrays, validated into float32 numpy arrays.

A matrix arrives either as rows of numbers, `[[1, 2], [3, 4]]`, or as
`{"shape": [h, w], "dtype": "float32", "data": "<base64, little-endian, row-major>"}`
(dtype float32 or float64). Either way it becomes a C-contiguous float32 array,
checked without Python work per element (pydantic-core and numpy do the loops),
and every fault carries its location (`/input/3/1`, `/input/data`). Stored and
queued, a matrix is always in the base64 form: a worker decodes it in
microseconds instead of parsing a million numbers again.
"""

from typing import Annotated, Any, Literal

import numpy as np
import orjson
import pybase64
from annotated_types import Ge, MinLen
from pydantic import BaseModel, ConfigDict, StrictStr, TypeAdapter

from shared.jsontypes import FLOAT32_MAX, Integer, Number, fault, invalid

DTYPES = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}
_Rows = TypeAdapter(Annotated[list[Annotated[list[Number], MinLen(1)]], MinLen(1)])


class Base64Array(BaseModel):
    """The base64 form of a matrix."""

    model_config = ConfigDict(extra="forbid")

    shape: tuple[Annotated[Integer, Ge(1)], Annotated[Integer, Ge(1)]]
    dtype: Literal["float32", "float64"] = "float32"
    data: StrictStr


def to_array(value: Any, max_elements: int | None = None) -> np.ndarray:
    """Validate a matrix in either form into a float32 (h, w) array; raise ValidationError pointing at the fault."""
    if isinstance(value, dict):
        spec = Base64Array.model_validate(value)
        _check_size(spec.shape, max_elements)
        return _decode(spec)
    rows = _Rows.validate_python(value)
    width = len(rows[0])
    for index, row in enumerate(rows):
        if len(row) != width:
            message = (
                f"row {index} has length {len(row)} but row 0 has length {width}: all rows must be the same length"
            )
            raise invalid("Matrix", fault((index,), "ragged_matrix", message))
    _check_size((len(rows), width), max_elements)
    return np.array(rows, dtype=np.float32)


def _check_size(shape: tuple[int, int], max_elements: int | None) -> None:
    elements = shape[0] * shape[1]
    if max_elements is not None and elements > max_elements:
        message = (
            f"matrix is {shape[0]} x {shape[1]} = {elements} elements, "
            f"over this server's limit of {max_elements} (MAX_MATRIX_ELEMENTS)"
        )
        raise invalid("Matrix", fault((), "matrix_too_large", message))


def _decode(spec: Base64Array) -> np.ndarray:
    dtype = DTYPES[spec.dtype]
    expected = spec.shape[0] * spec.shape[1] * dtype.itemsize
    try:
        raw = pybase64.b64decode_as_bytearray(spec.data, validate=True)
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
        row, column = (int(index) for index in np.argwhere(~finite)[0])
        message = (
            f"element [{row}, {column}] is {array[row, column]} after conversion to float32: "
            f"elements must be finite and within +-{FLOAT32_MAX:.4g}"
        )
        raise invalid("Matrix", fault(("data",), "element_not_finite", message))
    return array


def to_base64(array: np.ndarray) -> dict:
    """The base64 form of a float32 matrix."""
    array = np.ascontiguousarray(array, dtype=DTYPES["float32"])
    return {"shape": list(array.shape), "dtype": "float32", "data": pybase64.b64encode_as_string(array)}


def to_json(value: Any, form: Literal["lists", "base64"]) -> bytes:
    """Encode `value` as JSON with every numpy array in it written in `form` (lists: float32's shortest digits)."""
    if form == "lists":
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    return orjson.dumps(value, default=_base64_default)


def _base64_default(value: Any) -> dict:
    if isinstance(value, np.ndarray):
        return to_base64(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


_BASE64_SCHEMA = Base64Array.model_json_schema() | {"title": "Base64Array"}
_BASE64_SCHEMA["properties"]["data"] |= {"contentEncoding": "base64"}
MATRIX_SCHEMA = {"anyOf": [_Rows.json_schema(), _BASE64_SCHEMA]}
