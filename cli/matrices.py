"""Command-line values: matrices read from JSON, CSV or .npy files (by extension), and "1" / "1x2" pairs.

A file that cannot be read or is no matrix is a usage error (exit 2). A JSON
file is sent as it is, so the API judges its rows and says where a fault is.
"""

import json
import warnings
from pathlib import Path

import click
import numpy as np

MATRIX_SUFFIXES = (".json", ".csv", ".npy")


def load_matrix(path: Path) -> list | dict | np.ndarray:
    """The matrix in the file; ValueError or OSError saying why there is none."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        return json.loads(path.read_text())
    if suffix == ".csv":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty file: numpy warns, the size check below refuses it
            array = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    elif suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    else:
        raise ValueError(f"not a matrix file: give a {', '.join(MATRIX_SUFFIXES)} file")
    numeric = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    if array.ndim != 2 or array.size == 0 or not numeric:
        shape = " x ".join(map(str, array.shape))
        raise ValueError(f"holds a {shape} array of {array.dtype}, not a 2-D matrix of numbers")
    return array


class MatrixFile(click.ParamType):
    """A matrix file's path, converted to its matrix."""

    name = "FILE"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return load_matrix(Path(value))
        except OSError as error:
            self.fail(f"cannot read {value}: {error.strerror or error}", param, ctx)
        except ValueError as error:
            self.fail(f"{value}: {error}", param, ctx)


class KernelFile(MatrixFile):
    """A kernel: a matrix file, or (without a matrix file's extension) the name of a kernel the server offers."""

    name = "FILE|NAME"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and Path(value).suffix.lower() not in MATRIX_SUFFIXES:
            return KernelName(value)
        return super().convert(value, param, ctx)


class KernelName(str):
    """A kernel's name (see GET /v1/kernels), resolved once a client is at hand."""


class PairType(click.ParamType):
    """One integer for both dimensions ("2"), or one per dimension ("1x2")."""

    name = "pair"

    def get_metavar(self, param, ctx):
        return "N|HxW"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        parts = value.lower().split("x")
        if len(parts) > 2 or not all(part.strip().lstrip("-").isdigit() for part in parts):
            self.fail(f"{value!r} is not N or HxW (e.g. 2 or 1x2)", param, ctx)
        numbers = [int(part) for part in parts]
        return numbers[0] if len(numbers) == 1 else numbers
