"""Requests and results at rest: a small JSON skeleton, with the arrays' raw bytes beside it (never base64).

A packed value is the JSON of a request or result in which each array is a
placeholder, `{"shape": [h, w], "dtype": "float32", "data": "\\u0000array-<i>"}`,
and, beside it, the raw bytes (float32, little-endian, row-major) of arrays 0, 1, ...
one after another. The skeleton describes the value (parameters and shapes) and
stays with the job; the bytes are written once, read once, and never parsed.

A request is stored as its two parts (shared.jobstore keeps the skeleton on the
job's record and deletes the arrays when the job ends); a result as one value:
RESULT_MAGIC, the skeleton's length (4 bytes, little-endian), the skeleton, the
arrays. Stored values that do not start with RESULT_MAGIC, and requests without
arrays, are of the previous format (JSON with base64 arrays, shared.arrays).
"""

import struct
from typing import Any, Literal, NamedTuple, TypeVar

import numpy as np
import orjson
from pydantic import BaseModel

from shared.arrays import DTYPES, PLACEHOLDER, SPLICED, to_array, to_json

RESULT_MAGIC = b"\x93CVQ1"
_LENGTH = struct.Struct("<I")
_FLOAT32 = DTYPES["float32"]
Model = TypeVar("Model", bound=BaseModel)


class Packed(NamedTuple):
    """A request as stored: its skeleton JSON, and its arrays' raw bytes (None: the skeleton is a whole JSON request
    of the previous format, its arrays in base64)."""

    skeleton: bytes
    arrays: bytes | None


def pack_request(model: BaseModel) -> Packed:
    """The validated request as a skeleton and its arrays' bytes, each array copied once."""
    spliced: list[np.ndarray] = []
    skeleton = model.__pydantic_serializer__.to_json(model, context={SPLICED: spliced})
    return Packed(skeleton, b"".join(memoryview(array).cast("B") for array in spliced))


def load_request(model: type[Model], packed: Packed) -> Model:
    """The request model of a stored request, of either format."""
    if packed.arrays is None:
        return model.model_validate_json(packed.skeleton)
    return model.model_validate(_fill(orjson.loads(packed.skeleton), packed.arrays))


def pack_result(value: dict, form: Literal["lists", "base64"]) -> bytes:
    """A result (numpy arrays in it) as one stored value; `form` is how the API writes its arrays as JSON."""
    arrays: list[np.ndarray] = []

    def placeholder(item: Any) -> dict:
        if not isinstance(item, np.ndarray):
            raise TypeError(f"cannot write {type(item).__name__} as JSON")
        arrays.append(np.ascontiguousarray(item, dtype=_FLOAT32))
        return {"shape": list(item.shape), "dtype": "float32", "data": f"{PLACEHOLDER}{len(arrays) - 1}"}

    skeleton = orjson.dumps({"form": form, "value": value}, default=placeholder)
    return b"".join([RESULT_MAGIC, _LENGTH.pack(len(skeleton)), skeleton, *(memoryview(a).cast("B") for a in arrays)])


def result_json(stored: bytes) -> bytes:
    """A stored result as the API answers it: JSON, its arrays in the form the request asked for."""
    if not stored.startswith(RESULT_MAGIC):
        return stored  # the previous format: the JSON itself
    header, value = _unpack_result(stored)
    return to_json(value, header["form"])


def result_array(stored: bytes, field: str, dimensions: tuple[int, ...]) -> np.ndarray:
    """One array of a stored result, as float32, without writing it as JSON."""
    if not stored.startswith(RESULT_MAGIC):
        return to_array(orjson.loads(stored)[field], dimensions=dimensions)  # lists or base64
    return _unpack_result(stored)[1][field]


def _unpack_result(stored: bytes) -> tuple[dict, dict]:
    start = len(RESULT_MAGIC) + _LENGTH.size
    (length,) = _LENGTH.unpack_from(stored, len(RESULT_MAGIC))
    header = orjson.loads(stored[start : start + length])
    return header, _fill(header["value"], memoryview(stored)[start + length :])


def _fill(skeleton: Any, raw: bytes | memoryview) -> Any:
    """The skeleton with each placeholder replaced by its array, read from `raw` (copied once: writable)."""
    found: list[tuple[int, list | dict, str | int, list[int]]] = []
    pending = [skeleton]
    while pending:
        container = pending.pop()
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, item in items:
            if isinstance(item, dict) and str(item.get("data", "")).startswith(PLACEHOLDER):
                found.append((int(item["data"].removeprefix(PLACEHOLDER)), container, key, item["shape"]))
            elif isinstance(item, dict) or isinstance(item, list) and item and not isinstance(item[0], int | float):
                pending.append(item)  # not lists of numbers (a loss history): no array is in them
    buffer, offset = bytearray(raw), 0
    for _, container, key, shape in sorted(found, key=lambda ref: ref[0]):
        count = int(np.prod(shape))
        container[key] = np.frombuffer(buffer, _FLOAT32, count, offset).reshape(shape)
        offset += count * _FLOAT32.itemsize
    return skeleton
