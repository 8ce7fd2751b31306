"""Big nested-list arrays in a JSON body, read straight into float32 without a Python object per number.

A JSON parser turns `[[0.5, 1], ...]` into a list per row and a float per
number: about 40 bytes per element where the text has 2 to 12, so a body
within the limits cost 15 times its size before any check ran. Here each
long run of array text (`"input": [[...]]`, at least BULK_MIN_BYTES of
brackets, numbers, commas and whitespace) is cut out of the body before the
parser sees it, and read in place:

1. its skeleton (the text without numbers and whitespace) must be that of a
   rectangular array, `[[,,],[,,]]`, which gives its shape; the element limit is
   checked on that shape, before a single number is read;
2. with its brackets blanked out, the text is numbers between commas, which
   the parser of the rest of the body (jiter, as strict) reads a chunk at a
   time into one float32 array: a chunk's Python floats at a time, never all.

Long base64 `data` (an array in its packed form) is decoded straight from the
body too, never made a str. The parser then reads the rest of the body, with a
placeholder string where each array was, and the placeholders are swapped for
the arrays (which the request models take as they are, checking their
dimensions and size again). What the rest may hold is bounded too: at most
max(MIN_LOOSE_NUMBERS, one per LOOSE_BYTES of body) numbers, else 413. Peak
memory while parsing is the body, once, plus the float32 arrays: at most 3 times
the body (2-byte elements, `0,`), 1.4 times for 10-byte ones.

An array text that fails a check is refused as it stands: malformed numbers
with 400, like any malformed JSON; ragged rows, empty lists, too many elements,
numbers that do not fit float32, with 422 at the array's location, naming the
element when it is known. Short arrays never come here: the parser and the
request models check them and name every fault.
"""

import re
import uuid
from dataclasses import dataclass

import jiter
import numpy as np
import pybase64

from shared.arrays import MAX_DIMENSIONS, Decoded

BULK_MIN_BYTES = 1024
CHUNK_BYTES = 1024 * 1024
MAX_DEPTH = 64
# What is left for the parser (short arrays, lists, keys) may hold this many numbers, or one per LOOSE_BYTES of
# body if more: each costs about 50 bytes as Python objects, so the parser never holds more than ~3x the body.
MIN_LOOSE_NUMBERS = 100_000
LOOSE_BYTES = 16

# An object member's value that starts with "[" and goes on for BULK_MIN_BYTES in array characters only.
_RUN = re.compile(rb":\s*(\[[\[\]0-9eE+\-.,\s]{%d,})" % BULK_MIN_BYTES)
# The base64 `data` of an array in its packed form: decoded from the body, never made a str.
_PACKED = re.compile(rb'"data"\s*:\s*"([A-Za-z0-9+/]{%d,}={0,2})"' % BULK_MIN_BYTES)
_OPENING = re.compile(rb"\[(?:\s*\[)*")
_NUMBER_CHARACTERS = b"0123456789.eE+-"
_WHITESPACE = b" \t\n\r"


class Malformed(ValueError):
    """The text is not JSON (a 400, as the parser's own errors)."""


class TooManyNumbers(ValueError):
    """More numbers outside long arrays than the parser may hold (a 413)."""


@dataclass(frozen=True)
class Refused:
    """An array that is JSON but not an acceptable matrix: a 422 at its location, raised when that is known."""

    kind: str
    message: str
    element: tuple[int, ...] = ()


@dataclass
class Cut:
    """A body with its long arrays cut out: the rest to parse, and what each placeholder stands for."""

    rest: bytes
    arrays: dict[str, np.ndarray | Decoded | Refused]


def cut_arrays(body: bytearray, max_elements: int | None) -> Cut:
    """Read the long arrays of `body` (which this changes) and return the rest with placeholders in their place."""
    if len(body) < BULK_MIN_BYTES:
        return Cut(bytes(body), {})
    cut = _cut(body, max_elements)
    loose = cut.rest.count(b",") + cut.rest.count(b"]") + 1  # at least the numbers left
    allowed = max(MIN_LOOSE_NUMBERS, len(body) // LOOSE_BYTES)
    if loose > allowed:
        raise TooManyNumbers(
            f"the body holds up to {loose} values outside matrices of {BULK_MIN_BYTES} bytes or more, over the "
            f"{allowed} this server reads for a body of this size: send many small matrices in the base64 form"
        )
    return cut


def _cut(body: bytearray, max_elements: int | None) -> Cut:
    token = uuid.uuid4().hex
    arrays: dict[str, np.ndarray | Decoded | Refused] = {}
    found = []  # (start, end, what it stands for), in the order of the body
    for match in _RUN.finditer(body):
        start = match.start(1)
        end = _array_end(body, start, match.end(1))
        if end is not None:  # else not one whole array: the parser reads it, and says what is wrong
            found.append((start, end, lambda start=start, end=end: read_array(body, start, end, max_elements)))
    for match in _PACKED.finditer(body):
        found.append((match.start(1) - 1, match.end(1) + 1, lambda match=match: _decode(body, match)))
    pieces, position = [], 0
    for start, end, read in sorted(found, key=lambda item: item[0]):
        if start < position:
            continue
        name = f"\x00convq-array-{token}-{len(arrays)}"
        arrays[name] = read()
        pieces += [bytes(memoryview(body)[position:start]), b'"\\u0000' + name[1:].encode() + b'"']
        position = end
    if not arrays:
        return Cut(bytes(body), {})
    pieces.append(bytes(memoryview(body)[position:]))
    return Cut(b"".join(pieces), arrays)


def _decode(body: bytearray, match: re.Match) -> Decoded | Refused:
    try:
        return Decoded(pybase64.b64decode_as_bytearray(memoryview(body)[match.start(1) : match.end(1)], validate=True))
    except ValueError:
        return Refused("base64_invalid", "data is not valid base64")


def _array_end(body: bytearray, start: int, run_end: int) -> int | None:
    """Where the array starting at `start` ends: after the first run of as many "]" as it opens "[" at its start."""
    opening = _OPENING.match(body, start, min(run_end, start + 64 * MAX_DEPTH))
    depth = opening.group().count(b"[")
    if not 1 < depth <= MAX_DEPTH:
        return None  # a flat list (a bias per channel) is the parser's; bracket soup is malformed
    closing = re.compile(rb"\]" + rb"\s*\]" * (depth - 1))
    found = closing.search(body, start, run_end)
    return found.end() if found else None


def read_array(body: bytearray, start: int, end: int, max_elements: int | None) -> np.ndarray | Refused:
    """The array written in body[start:end] as float32; raise Malformed if it is not JSON."""
    numbers = body.count(b",", start, end) + 1  # each list of n holds n - 1 commas: an array of N numbers, N - 1
    if max_elements is not None and numbers > max_elements:
        return Refused(
            "matrix_too_large",
            f"array holds {numbers} numbers, over this server's limit of {max_elements} (MAX_MATRIX_ELEMENTS)",
        )
    skeleton = b"".join(chunk.translate(None, _NUMBER_CHARACTERS + _WHITESPACE) for chunk in _pieces(body, start, end))
    depth = len(skeleton) - len(skeleton.lstrip(b"["))
    if depth > MAX_DIMENSIONS:
        return Refused("wrong_dimensions", f"array has {depth} dimensions; matrices have at most {MAX_DIMENSIONS}")
    shape = _shape(skeleton, depth)
    del skeleton
    if shape is None:
        return Refused(
            "not_a_matrix",
            "array is not rectangular: its rows (or lists at one depth) differ in length, or one is empty",
        )
    elements = int(np.prod(shape))
    if max_elements is not None and elements > max_elements:
        return Refused(
            "matrix_too_large",
            f"matrix is {' x '.join(map(str, shape))} = {elements} elements, "
            f"over this server's limit of {max_elements} (MAX_MATRIX_ELEMENTS)",
        )
    text = np.frombuffer(body, dtype=np.uint8, count=end - start, offset=start)
    for low in range(0, len(text), CHUNK_BYTES):  # now numbers between commas and whitespace
        piece = text[low : low + CHUNK_BYTES]
        piece[(piece == ord("[")) | (piece == ord("]"))] = ord(" ")
    array = np.empty(elements, dtype=np.float32)
    filled = 0
    for chunk in _chunks(body, start, end):
        values = _parse(chunk)
        if filled + len(values) > elements:
            raise Malformed("an array holds more numbers than its brackets say")
        with np.errstate(over="ignore"):
            array[filled : filled + len(values)] = values  # beyond float32: inf, refused below
        filled += len(values)
    if filled != elements:
        raise Malformed("an array holds fewer numbers than its brackets say")
    finite = np.isfinite(array)
    if not finite.all():
        where = tuple(int(i) for i in np.unravel_index(int(np.argmin(finite)), shape))
        message = f"element {list(where)} does not fit in float32: elements must be within +-3.403e+38"
        return Refused("element_not_finite", message, where)
    return array.reshape(shape)


def _shape(skeleton: bytes, depth: int) -> tuple[int, ...] | None:
    """The shape of a rectangular array from its skeleton (`[[,],[,]]` is 2 x 2), or None if it is not one."""
    first_row_end = skeleton.find(b"]")
    unit = skeleton[depth - 1 : first_row_end + 1]
    if unit != b"[" + b"," * (len(unit) - 2) + b"]":
        return None
    shape = [len(unit) - 1]
    for level in range(depth - 2, -1, -1):
        position, count, step = level + 1 + len(unit), 1, b"," + unit
        while skeleton.startswith(step, position):
            position, count = position + len(step), count + 1
        shape.insert(0, count)
        unit = b"[" + b",".join([unit] * count) + b"]"
    return tuple(shape) if skeleton == unit else None


def _pieces(body: bytearray, start: int, end: int):
    """Copies of body[start:end] in pieces of CHUNK_BYTES."""
    for low in range(start, end, CHUNK_BYTES):
        yield bytes(memoryview(body)[low : min(low + CHUNK_BYTES, end)])


def _chunks(body: bytearray, start: int, end: int):
    """Read-only copies of body[start:end] in pieces of about CHUNK_BYTES, each cut at a comma (not kept)."""
    while start < end:
        cut = body.find(b",", min(start + CHUNK_BYTES, end), end) if start + CHUNK_BYTES < end else -1
        stop = end if cut == -1 else cut
        yield bytes(memoryview(body)[start:stop])
        start = stop + 1


def _parse(text: bytes) -> np.ndarray:
    """The numbers of a chunk, read by the same strict parser as the rest of the body (one chunk's floats at a time)."""
    try:
        values = jiter.from_json(b"[" + text + b"]", allow_inf_nan=False)
    except ValueError as error:
        raise Malformed(f"in an array: {error}") from None
    try:
        return np.array(values, dtype=np.float64)
    except OverflowError:  # an integer beyond float64
        return np.array([float("inf")])


def swap_in(value: object, arrays: dict[str, np.ndarray | Refused], loc: tuple = ()):
    """`value` with every placeholder replaced by its array; a Refused one raises (loc, Refused)."""
    if isinstance(value, str) and value in arrays:
        found = arrays[value]
        if isinstance(found, Refused):
            raise RefusedAt(loc, found)
        return found
    if isinstance(value, dict):
        return {key: swap_in(item, arrays, (*loc, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [swap_in(item, arrays, (*loc, index)) for index, item in enumerate(value)]
    return value


class RefusedAt(Exception):
    def __init__(self, loc: tuple, refused: Refused):
        super().__init__(refused.message)
        self.loc, self.refused = loc, refused
