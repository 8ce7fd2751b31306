"""Arrays on the wire (the API's two forms): numpy arrays go as base64, results come back as numpy arrays.

An array is a matrix (H x W) or one with channels (C x H x W inputs, C x kh x kw
and O x C x kh x kw kernels). The base64 form is
`{"shape": [...], "dtype": "float32", "data": "<base64>"}`, the elements in
row-major order, little-endian. It is about half the size of nested lists and
the server decodes it without parsing a number at a time.
"""

import base64
import io
from typing import Any

import numpy as np

DTYPES = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}

# Numpy arrays this big (or bigger) are sent as .npy files of a multipart body: raw bytes, a third smaller than
# base64, read by the server without decoding (below it, the JSON body's overhead is smaller than a form's).
NPY_MIN_ELEMENTS = 65_536

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


def _wire_dtype(matrix: np.ndarray) -> np.dtype:
    return DTYPES["float64" if matrix.dtype == np.float64 else "float32"]


def npy_bytes(matrix: np.ndarray) -> bytes:
    """A numpy array as an .npy file (float64 stays float64, anything else becomes float32)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(matrix, dtype=_wire_dtype(matrix)), allow_pickle=False)
    return buffer.getvalue()


def npz_bytes(**arrays: np.ndarray | None) -> bytes:
    """Arrays as an .npz file (uncompressed), leaving out those that are None."""
    buffer = io.BytesIO()
    given = {name: value for name, value in arrays.items() if value is not None}
    np.savez(buffer, **{name: np.ascontiguousarray(value, dtype=_wire_dtype(value)) for name, value in given.items()})
    return buffer.getvalue()


def read_npy(content: bytes) -> np.ndarray:
    """An .npy file's array (never unpickling anything)."""
    return np.load(io.BytesIO(content), allow_pickle=False)
