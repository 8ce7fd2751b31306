"""Arrays on the wire (the API's two forms): numpy arrays go as base64, results come back as numpy arrays.

An array is a matrix (H x W) or one with channels (C x H x W inputs, C x kh x kw
and O x C x kh x kw kernels). The base64 form is
`{"shape": [...], "dtype": "float32", "data": "<base64>"}`, the elements in
row-major order, little-endian. It is about half the size of nested lists and
the server decodes it without parsing a number at a time.
"""

import base64
from typing import Any

import numpy as np

DTYPES = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}

# What a request accepts as an array: a numpy array, or nested lists (or a ready-made wire form) sent as they are.
MatrixLike = np.ndarray | list | dict


def to_wire(matrix: MatrixLike | None) -> Any:
    """A numpy array in the base64 form (float64 stays float64, anything else becomes float32); other values as is."""
    if not isinstance(matrix, np.ndarray):
        return matrix
    dtype = "float64" if matrix.dtype == np.float64 else "float32"
    data = np.ascontiguousarray(matrix, dtype=DTYPES[dtype])
    return {"shape": list(data.shape), "dtype": dtype, "data": base64.b64encode(data.tobytes()).decode("ascii")}


def from_wire(value: list | dict) -> np.ndarray:
    """An array of a result (2-D to 4-D), in either form, as a float32 array."""
    if isinstance(value, dict):
        raw = base64.b64decode(value["data"], validate=True)
        return np.frombuffer(raw, dtype=DTYPES[value["dtype"]]).reshape(value["shape"]).astype(np.float32)
    return np.array(value, dtype=np.float32)
