"""Correlations of an uploaded image: multipart/form-data with a PNG or JPEG `image` and the options as fields.

The image becomes the correlation's `input`: grayscale, float, scaled to [0, 1]
whatever its bit depth (8-bit by 255, 16-bit by 65535), turned upright by its
EXIF orientation. Decoding is guarded: only PNG and JPEG are opened, and the
pixel count from the header is checked before a single pixel is decoded, so a
small file that unpacks to gigapixels (a decompression bomb) is refused cheaply.

The other fields hold JSON, as in a JSON body (`kernel=[[1,-1]]`, `padding=1`,
`stride=[1,2]`, `bias=0.5`), except `result_format` and `device`, which are plain text; a
`kernel` may also name one of the presets of GET /v1/kernels (`kernel=sobel-x`).
"""

from typing import get_args

import jiter
import numpy as np
from flask import request
from PIL import Image, ImageOps, UnidentifiedImageError
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge

from api.body import body_too_large, validate
from api.kernels import KERNELS
from api.problems import ProblemError, invalid
from shared.request_models import CorrelationRequest
from shared.shapes import Limits

IMAGE_FORMATS = ("PNG", "JPEG")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")  # Pillow's modes for 16-bit grayscale PNGs
TEXT_FIELDS = ("result_format", "device")
IMAGE_FIELD = "image"  # the file, which becomes the request's `input`


def parse_image_correlation(limits: Limits) -> CorrelationRequest:
    """The form as a CorrelationRequest whose input is the image; faults point at the form's own field names."""
    try:
        files, form = request.files, request.form
    except RequestEntityTooLarge:
        raise body_too_large() from None
    fields = {name: _field(name, form.getlist(name)) for name in form}
    for name in files:
        if name != IMAGE_FIELD:
            raise _fault(f"/{name}", "unexpected_file", f"only one file is taken, named image, not {name!r}")
    uploads = files.getlist(IMAGE_FIELD)
    if len(uploads) != 1:
        raise _fault("/image", "missing" if not uploads else "too_many_files", "send exactly one file named image")
    if "input" in fields:
        raise _fault("/input", "input_and_image", "send the input as the image file, not as a field too")
    max_pixels = limits.max_matrix_elements or Image.MAX_IMAGE_PIXELS
    fields["input"] = grayscale(uploads[0], max_pixels)
    return validate(CorrelationRequest, fields, limits, renamed={"input": IMAGE_FIELD})


def form_schema() -> dict:
    """The form as parse_image_correlation takes it, for the OpenAPI document: CorrelationRequest's fields as text."""
    properties: dict[str, dict] = {
        IMAGE_FIELD: {"type": "string", "format": "binary", "description": "a PNG or JPEG file"}
    }
    required = [IMAGE_FIELD]
    for name, field in CorrelationRequest.model_fields.items():
        if name == "input":
            continue
        if name in TEXT_FIELDS:
            properties[name] = {"type": "string", "enum": list(get_args(field.annotation))}
        else:
            how = "JSON, or a preset's name (GET /v1/kernels)" if name == "kernel" else "JSON"
            properties[name] = {"type": "string", "description": f"{how}: {field.description}"}
        if field.is_required():
            required.append(name)
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": False}


def grayscale(upload: FileStorage, max_pixels: int) -> np.ndarray:
    """The image as an upright float32 grayscale matrix in [0, 1]; 413 over `max_pixels`, 422 if not decodable."""
    try:
        with Image.open(upload.stream, formats=IMAGE_FORMATS) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise _too_many_pixels(width, height, max_pixels)
            upright = ImageOps.exif_transpose(image)  # the first step that decodes pixels
            if upright.mode in SIXTEEN_BIT_MODES:
                return np.asarray(upright, dtype=np.float32) / np.float32(65535)
            return np.asarray(upright.convert("L"), dtype=np.float32) / np.float32(255)
    except UnidentifiedImageError:
        raise _fault("/image", "image_format", "image must be a PNG or JPEG file") from None
    except Image.DecompressionBombError as error:  # Pillow's own guard, when the header is absurd
        raise _fault("/image", "too_many_pixels", str(error), status=413) from None
    except (OSError, ValueError, SyntaxError) as error:  # truncated or corrupt data (Pillow raises all three)
        raise _fault("/image", "image_corrupt", f"image could not be decoded: {error}") from None


def _field(name: str, values: list[str]) -> object:
    if len(values) != 1:
        raise _fault(f"/{name}", "repeated_field", f"{name} is given {len(values)} times; give it once")
    text = values[0]
    if name in TEXT_FIELDS:
        return text
    if name == "kernel" and text.strip() in KERNELS:
        return KERNELS[text.strip()].matrix
    try:
        return jiter.from_json(text.encode(), allow_inf_nan=False, catch_duplicate_keys=True)
    except ValueError as error:
        hint = ", or the name of a preset (GET /v1/kernels)" if name == "kernel" else ""
        raise _fault(f"/{name}", "json_invalid", f"{name} must be JSON{hint}: {error}") from None


def _too_many_pixels(width: int, height: int, max_pixels: int) -> ProblemError:
    message = (
        f"image is {width} x {height} = {width * height} pixels, "
        f"over this server's limit of {max_pixels} (MAX_MATRIX_ELEMENTS)"
    )
    return _fault("/image", "too_many_pixels", message, status=413)


def _fault(loc: str, kind: str, message: str, status: int = 422) -> ProblemError:
    return invalid(status, message, [{"loc": loc, "msg": message, "type": kind}])
