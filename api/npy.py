"""Arrays as .npy files, and training pairs as one .npz: the header checked before a byte of the data is read.

A .npy file is a short header (magic, version, then a Python dict literal with
`descr`, `fortran_order` and `shape`) followed by the raw elements. numpy's own
header reader parses the dict with ast.literal_eval, never pickle; this module
then refuses, before reading the data: any dtype but float32 and float64 (either
byte order; no object, structured, integer or complex arrays), a shape of the
wrong number of dimensions, an empty one, or one over MAX_MATRIX_ELEMENTS, and
a file shorter than its shape says (so a small body claiming a huge shape is
answered at once). The data is then read in one piece into numpy, converted to
float32 and checked finite, with no Python object per element. Pickles are never
loaded: object arrays are refused from their dtype, and nothing here calls
np.load.

An .npz of pairs (`pairs`) holds `inputs` (N x H x W or N x C x H x W) and,
unless the training has a target_kernel, `targets` (N x ...): pair i is
(inputs[i], targets[i]). Each member is read as above from its own stream (a
compressed member is inflated only as far as its checked shape allows).
"""

import io
import zipfile
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

MEDIA_TYPE = "application/x-npy"
PAIRS_MEMBERS = ("inputs", "targets")
_HEADER_READERS = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}


class Fault(ValueError):
    """What is wrong with an uploaded array; `where` is the path to the fault inside it (a member, an element)."""

    def __init__(self, kind: str, message: str, where: tuple[str | int, ...] = ()):
        super().__init__(message)
        self.kind, self.message, self.where = kind, message, where


def stream_size(stream: IO[bytes]) -> int:
    """The bytes left in a seekable stream (an uploaded part), without reading them."""
    here = stream.tell()
    end = stream.seek(0, 2)
    stream.seek(here)
    return end - here


def read(stream: IO[bytes], size: int, max_elements: int | None, dimensions: tuple[int, ...]) -> np.ndarray:
    """The .npy in `stream` (of `size` bytes) as a C-contiguous float32 array, or a Fault saying why not."""
    shape, fortran, dtype, header_bytes = _header(stream)
    if len(shape) not in dimensions:
        wanted = " or ".join(map(str, dimensions))
        raise Fault("wrong_dimensions", f"array has {len(shape)} dimensions but this field takes {wanted}")
    _check_shape(shape, max_elements)
    return _data(stream, size - header_bytes, shape, fortran, dtype)


def read_pairs(stream: IO[bytes], max_elements: int | None, max_total: int | None) -> list[dict[str, np.ndarray]]:
    """The pairs of an .npz (inputs, and targets unless the training has a target_kernel) as the model's pairs."""
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise Fault(
            "npz_invalid", f"pairs must be an .npz file (a zip of inputs.npy and targets.npy): {error}"
        ) from None
    with archive:
        members = {name.removesuffix(".npy"): info for name in archive.namelist() if (info := archive.getinfo(name))}
        extra = sorted(set(members) - set(PAIRS_MEMBERS))
        if extra:
            raise Fault("npz_member", f"the .npz holds {extra}: only inputs and targets are taken", (extra[0],))
        if "inputs" not in members:
            raise Fault("missing", "the .npz lacks inputs.npy", ("inputs",))
        stacks = {}
        for name, info in members.items():
            try:
                with archive.open(info) as member:
                    stacks[name] = _read_stack(member, info.file_size, max_elements, max_total)
            except Fault as fault:
                raise Fault(fault.kind, f"{name}: {fault.message}", (name, *fault.where)) from None
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:  # a corrupt or truncated member
                raise Fault("npz_invalid", f"{name}.npy could not be read: {error}", (name,)) from None
    inputs, targets = stacks["inputs"], stacks.get("targets")
    if targets is not None and len(targets) != len(inputs):
        message = f"targets holds {len(targets)} pairs but inputs holds {len(inputs)}"
        raise Fault("pairs_count_mismatch", message, ("targets",))
    return [
        {"input": inputs[index]} | ({"target": targets[index]} if targets is not None else {})
        for index in range(len(inputs))
    ]


def _read_stack(stream: IO[bytes], size: int, max_elements: int | None, max_total: int | None) -> np.ndarray:
    shape, fortran, dtype, header_bytes = _header(stream)
    if len(shape) not in (3, 4):
        message = f"array has {len(shape)} dimensions but takes 3 or 4: N pairs of H x W, or of C x H x W"
        raise Fault("wrong_dimensions", message)
    _check_shape(shape[1:], max_elements)
    _check_shape(shape, max_total, "the pairs together")
    return _data(stream, size - header_bytes, shape, fortran, dtype)


def _header(stream: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, header bytes) from the .npy header; Fault if it is not one this server takes."""
    try:
        version = npy_format.read_magic(stream)
    except (ValueError, EOFError, OSError):
        raise Fault("npy_invalid", "not an .npy file: it does not start with numpy's magic bytes") from None
    reader = _HEADER_READERS.get(version)
    if reader is None:
        raise Fault("npy_invalid", f".npy version {version[0]}.{version[1]} is not taken: send version 1.0 or 2.0")
    try:
        shape, fortran, dtype = reader(stream)
    except (ValueError, TypeError, SyntaxError, EOFError, OSError) as error:
        raise Fault("npy_invalid", f"the .npy header is not valid: {error}") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise Fault("npy_dtype", f"dtype {dtype.str!r} is not taken: send float32 or float64 (no object arrays)")
    if dtype.kind != "f" or dtype.itemsize not in (4, 8):
        raise Fault("npy_dtype", f"dtype {dtype.str!r} is not taken: send float32 or float64")
    return tuple(shape), bool(fortran), dtype, stream.tell()


def _check_shape(shape: tuple[int, ...], max_elements: int | None, what: str = "matrix") -> None:
    if any(side < 1 for side in shape):
        raise Fault("empty_matrix", f"shape {list(shape)} is empty: every dimension must be at least 1")
    elements = int(np.prod(shape, dtype=object))
    if max_elements is not None and elements > max_elements:
        message = (
            f"{what} is {' x '.join(map(str, shape))} = {elements} elements, "
            f"over this server's limit of {max_elements} (MAX_MATRIX_ELEMENTS)"
        )
        raise Fault("matrix_too_large", message)


def _data(stream: IO[bytes], available: int, shape: tuple[int, ...], fortran: bool, dtype: np.dtype) -> np.ndarray:
    """The elements after the header: exactly as many bytes as the shape needs, checked before they are read."""
    needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if available < needed:
        message = f"the data holds {max(available, 0)} bytes but shape {list(shape)} of {dtype.name} needs {needed}"
        raise Fault("npy_truncated", message)
    raw = stream.read(needed)
    if len(raw) < needed:
        raise Fault("npy_truncated", f"the data holds {len(raw)} bytes but shape {list(shape)} needs {needed}")
    if stream.read(1):
        raise Fault("npy_trailing_data", f"the file goes on after the {needed} bytes of shape {list(shape)}")
    array = np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    with np.errstate(over="ignore"):
        array = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        where = tuple(int(index) for index in np.argwhere(~finite)[0])
        message = f"element {list(where)} is {array[where]} as float32: elements must be finite and within +-3.403e+38"
        raise Fault("element_not_finite", message, where)
    return array


def to_bytes(array: np.ndarray) -> bytes:
    """A float32 array as an .npy file (version 1.0, little-endian, C order)."""
    array = np.ascontiguousarray(array, dtype="<f4")
    header = io.BytesIO()
    npy_format.write_array_header_1_0(header, npy_format.header_data_from_array_1_0(array))
    return b"".join([header.getvalue(), memoryview(array).cast("B")])  # one copy (write_array took three: 5 ms)
