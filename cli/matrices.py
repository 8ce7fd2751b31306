"""Command-line values: arrays and training pairs read from files (by extension), numbers, and "1x2" sizes.

A file that cannot be read or holds no array (or no pairs) is a usage error
(exit 2). A JSON file is sent as it is, so the API judges its rows and says
where a fault is.
"""

import json
import math
import warnings
import zipfile
from pathlib import Path

import click
import numpy as np

MATRIX_SUFFIXES = (".json", ".csv", ".npy")
PAIRS_SUFFIXES = (".json", ".npz")


def load_matrix(path: Path) -> list | dict | np.ndarray:
    """The array in the file (2-D; .json and .npy also 3-D, 4-D); ValueError or OSError saying why there is none."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _json(path)
    if suffix == ".csv":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty file: numpy warns, the size check below refuses it
            array = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    elif suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    else:
        raise ValueError(f"not a matrix file: give a {', '.join(MATRIX_SUFFIXES)} file")
    return _numeric("holds", array, (2, 3, 4), "a 2-D, 3-D or 4-D array")


def load_pairs(path: Path) -> list:
    """The training pairs in the file: dicts from .json, (input, target) tuples from .npz (target None without
    targets); ValueError or OSError saying why there are none."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        pairs = _json(path)
        if not isinstance(pairs, list) or not pairs or not all(isinstance(pair, dict) for pair in pairs):
            raise ValueError('holds no pairs: give a non-empty list of {"input": ..., "target": ...} objects')
        return pairs
    if suffix == ".npz":
        return _npz_pairs(path)
    raise ValueError(f"not a pairs file: give a {' or '.join(PAIRS_SUFFIXES)} file")


def _json(path: Path):
    """The file's JSON; NaN and Infinity, which JSON has not, are refused here rather than by the HTTP client."""
    return json.loads(path.read_text(), parse_constant=_not_json)


def _not_json(constant: str):
    raise ValueError(f"{constant} is not a JSON number")


def _npz_pairs(path: Path) -> list[tuple[np.ndarray, np.ndarray | None]]:
    try:
        archive = np.load(path, allow_pickle=False)
    except zipfile.BadZipFile as error:
        raise ValueError(f"is no .npz archive: {error}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError("is no .npz archive (numpy.savez writes one)")
    with archive:
        names = set(archive.files)
        if "inputs" not in names or not names <= {"inputs", "targets"}:
            held = ", ".join(sorted(names)) or "nothing"
            raise ValueError(f"holds {held}: give arrays inputs and (unless --target-kernel) targets")
        inputs = _numeric("inputs is", archive["inputs"], (3, 4), "N x H x W or N x C x H x W")
        if "targets" not in names:
            return [(example, None) for example in inputs]
        targets = _numeric("targets is", archive["targets"], (3, 4), "N x oh x ow or N x O x oh x ow")
    if len(targets) != len(inputs):
        raise ValueError(f"inputs holds {len(inputs)} examples but targets {len(targets)}: give one target each")
    return list(zip(inputs, targets, strict=True))


def _numeric(what: str, array: np.ndarray, dimensions: tuple[int, ...], wanted: str) -> np.ndarray:
    """The array if it has one of `dimensions` and holds numbers; ValueError naming its shape otherwise."""
    numeric = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    if array.ndim not in dimensions or array.size == 0 or not numeric:
        shape = " x ".join(map(str, array.shape))
        raise ValueError(f"{what} a {shape} array of {array.dtype}, not {wanted} of numbers")
    return array


class MatrixFile(click.ParamType):
    """An array file's path, converted to its array by `load`."""

    name = "FILE"
    load = staticmethod(load_matrix)

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return self.load(Path(value))
        except OSError as error:
            self.fail(f"cannot read {value}: {error.strerror or error}", param, ctx)
        except ValueError as error:
            self.fail(f"{value}: {error}", param, ctx)


class KernelFile(MatrixFile):
    """A kernel: an array file, or (without an array file's extension) the name of a kernel the server offers."""

    name = "FILE|NAME"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and Path(value).suffix.lower() not in MATRIX_SUFFIXES:
            return KernelName(value)
        return super().convert(value, param, ctx)


class KernelName(str):
    """A kernel's name (see GET /v1/kernels), resolved once a client is at hand."""


class PairsFile(MatrixFile):
    """A file of training pairs, converted to its pairs."""

    load = staticmethod(load_pairs)


class SizeType(click.ParamType):
    """Sizes joined by "x": one integer for both dimensions of a pair ("2"), or one per dimension ("1x2", "2x3x3")."""

    def __init__(self, dimensions: tuple[int, ...], metavar: str, example: str):
        self.dimensions, self.metavar, self.example = dimensions, metavar, example
        self.name = metavar

    def get_metavar(self, param, ctx):
        return self.metavar

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        parts = value.lower().split("x")
        if len(parts) not in self.dimensions or not all(part.strip().lstrip("-").isdigit() for part in parts):
            self.fail(f"{value!r} is not {self.metavar} (e.g. {self.example})", param, ctx)
        numbers = [int(part) for part in parts]
        return numbers[0] if len(numbers) == 1 else numbers


PAIR = SizeType((1, 2), "N|HxW", "2 or 1x2")
KERNEL_SHAPE = SizeType((2, 3, 4), "SHAPE", "3x3, 2x3x3 or 1x2x3x3")


class NumberType(click.ParamType):
    """A finite number; with `many`, one number or several joined by commas ("1,0,-1") as a list."""

    def __init__(self, many: bool = False):
        self.many = many
        self.name = "X[,X...]" if many else "FLOAT"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            numbers = [float(part) for part in (value.split(",") if self.many else [value])]
        except ValueError:
            numbers = []
        if not numbers or not all(math.isfinite(number) for number in numbers):
            wanted = "a number or numbers joined by commas (e.g. 0.5 or 1,0,-1)" if self.many else "a finite number"
            self.fail(f"{value!r} is not {wanted}", param, ctx)
        return numbers if len(numbers) > 1 else numbers[0]
