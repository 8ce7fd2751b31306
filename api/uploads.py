"""Multipart/form-data submissions: a correlation of an uploaded image, or arrays as .npy files (api/npy.py).

Arrays as files: `input`, `kernel`, `target`, `target_kernel` as .npy parts, a
training's `pairs` as one .npz of `inputs` and `targets`; the other fields as form
fields (JSON text, as below) or in one JSON part named `request` (an object of
them). An array may also be a form field holding JSON, as in a JSON body.

Correlations of an uploaded image: a PNG or JPEG `image` and the options as fields.

The image becomes the correlation's `input`: grayscale, float, scaled to [0, 1]
whatever its bit depth (8-bit by 255, 16-bit by 65535), turned upright by its
EXIF orientation. Decoding is guarded: only PNG and JPEG are opened, and the
pixel count from the header is checked before a single pixel is decoded, so a
small file that unpacks to gigapixels (a decompression bomb) is refused cheaply.

The other fields hold JSON, as in a JSON body (`kernel=[[1,-1]]`, `padding=1`,
`stride=[1,2]`, `bias=0.5`), except `result_format`, `device`, `optimizer` and `loss`, which are plain text; a
`kernel` may also name one of the presets of GET /v1/kernels (`kernel=sobel-x`).
"""

from typing import get_args

import jiter
import numpy as np
from flask import current_app, request
from PIL import Image, ImageOps, UnidentifiedImageError
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge

from api import bulk, npy
from api.body import body_too_large, validate
from api.kernels import KERNELS
from api.problems import ProblemError, invalid
from shared.request_models import CorrelationRequest, KernelTrainingRequest
from shared.shapes import Limits

IMAGE_FORMATS = ("PNG", "JPEG")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")  # Pillow's modes for 16-bit grayscale PNGs
TEXT_FIELDS = ("result_format", "device", "optimizer", "loss")  # plain text, the names of choices
IMAGE_FIELD = "image"  # the file, which becomes the request's `input`
JSON_PART = "request"  # a JSON object of the fields that are not files
# The .npy parts each model takes, with the numbers of dimensions of each; `pairs` is an .npz.
ARRAY_FILES = {
    CorrelationRequest: {"input": (2, 3), "kernel": (2, 3, 4)},
    KernelTrainingRequest: {"input": (2, 3), "target": (2, 3), "target_kernel": (2, 3, 4), "pairs": ()},
}


def parse_correlation_form(limits: Limits) -> CorrelationRequest:
    """An image correlation when the form has an image file (or no input at all), else one of .npy arrays."""
    files, form = _form()
    if IMAGE_FIELD in files or not ({"input", JSON_PART} & (set(files) | set(form))):
        return parse_image_correlation(limits)
    return parse_array_form(CorrelationRequest, limits)


def parse_array_form(model: type[CorrelationRequest | KernelTrainingRequest], limits: Limits):
    """The form as `model`: .npy parts read by api/npy.py, the other fields as JSON text or in one JSON part."""
    files, form = _form()
    fields: dict[str, object] = {}
    if JSON_PART in files or JSON_PART in form:
        fields = _json_part(files, form, limits)
    for name in form:
        if name != JSON_PART:
            _put(fields, name, _field(name, form.getlist(name)))
    taken = ARRAY_FILES[model]
    for name in files:
        if name == JSON_PART:
            continue
        if name not in taken:
            raise _fault(f"/{name}", "unexpected_file", f"the files taken are {', '.join(taken)}, not {name!r}")
        uploads = files.getlist(name)
        if len(uploads) != 1:
            raise _fault(f"/{name}", "too_many_files", f"{name} is sent {len(uploads)} times; send it once")
        _put(fields, name, _read_array(name, uploads[0], taken[name], limits))
    return validate(model, fields, limits)


def _form():
    try:
        return request.files, request.form
    except RequestEntityTooLarge:
        raise body_too_large() from None


def _put(fields: dict, name: str, value: object) -> None:
    if name in fields:
        raise _fault(f"/{name}", "repeated_field", f"{name} is given more than once (as a field, a file or in request)")
    fields[name] = value


def _json_part(files, form, limits: Limits) -> dict:
    """The JSON part's object; its long arrays read straight into float32 by api/bulk.py, as a JSON body's are."""
    parts = files.getlist(JSON_PART) + form.getlist(JSON_PART)
    if len(parts) != 1:
        raise _fault(f"/{JSON_PART}", "repeated_field", f"{JSON_PART} is given {len(parts)} times; give it once")
    part = parts[0]
    text = bytearray(part.read() if isinstance(part, FileStorage) else part.encode())
    try:
        cut = bulk.cut_arrays(text, limits.max_matrix_elements)
        value = bulk.swap_in(jiter.from_json(cut.rest, allow_inf_nan=False, catch_duplicate_keys=True), cut.arrays)
    except bulk.TooManyNumbers as error:
        raise _fault(f"/{JSON_PART}", "too_many_numbers", str(error), status=413) from None
    except bulk.RefusedAt as refused:
        where = "/".join(str(part) for part in (*refused.loc, *refused.refused.element))  # the field's own place
        raise _fault(f"/{where}", refused.refused.kind, refused.refused.message) from None
    except ValueError as error:  # jiter's, and bulk.Malformed
        raise _fault(f"/{JSON_PART}", "json_invalid", f"{JSON_PART} must be a JSON object: {error}") from None
    if not isinstance(value, dict):
        raise _fault(f"/{JSON_PART}", "json_invalid", f"{JSON_PART} must be a JSON object of the other fields")
    return value


def _read_array(name: str, upload: FileStorage, dimensions: tuple[int, ...], limits: Limits):
    """The part as a float32 array (or, for pairs, a list of pair dicts); 422 at the fault, before reading data."""
    stream = upload.stream
    try:
        if name == "pairs":
            body_limit = current_app.config["MAX_CONTENT_LENGTH"]
            total = None if body_limit is None else max(body_limit // 4, limits.max_matrix_elements or 0)
            return npy.read_pairs(stream, limits.max_matrix_elements, total)
        return npy.read(stream, npy.stream_size(stream), limits.max_matrix_elements, dimensions)
    except npy.Fault as fault:
        loc = "/".join(str(part) for part in (name, *fault.where))
        raise _fault(f"/{loc}", fault.kind, f"{name}: {fault.message}") from None


def parse_image_correlation(limits: Limits) -> CorrelationRequest:
    """The form as a CorrelationRequest whose input is the image; faults point at the form's own field names."""
    files, form = _form()
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


def form_schema(model: type[CorrelationRequest | KernelTrainingRequest]) -> dict:
    """The form as parse_correlation_form or parse_array_form takes it, for the OpenAPI document: the model's fields,
    its arrays as .npy files (a correlation's kernel as text too, and its input as an image instead)."""
    files = ARRAY_FILES[model]
    properties: dict[str, dict] = {}
    if model is CorrelationRequest:
        properties[IMAGE_FIELD] = {"type": "string", "format": "binary", "description": "a PNG or JPEG file"}
    for name, field in model.model_fields.items():
        if name in TEXT_FIELDS:
            properties[name] = {"type": "string", "enum": list(get_args(field.annotation))}
        elif name == "kernel":  # text in the image form since it began: a file part is taken alike
            how = "JSON, a preset's name (GET /v1/kernels), or an .npy file"
            properties[name] = {"type": "string", "description": f"{how}: {field.description}"}
        elif name in files:
            what = "an .npz of inputs (N x ...) and targets (N x ...)" if name == "pairs" else "an .npy file"
            properties[name] = {"type": "string", "format": "binary", "description": f"{what}: {field.description}"}
        else:
            properties[name] = {"type": "string", "description": f"JSON: {field.description}"}
    properties[JSON_PART] = {"type": "string", "description": "a JSON object of fields, instead of fields one by one"}
    return {"type": "object", "properties": properties, "additionalProperties": False}


def form_encoding(model: type[CorrelationRequest | KernelTrainingRequest]) -> dict:
    """The content types of the form's files."""
    files = ARRAY_FILES[model]
    encoding = {name: {"contentType": f"{npy.MEDIA_TYPE}, application/octet-stream"} for name in files}
    encoding.pop("kernel", None)  # text or a file: no one content type
    if "pairs" in files:
        encoding["pairs"] = {"contentType": "application/zip, application/octet-stream"}
    if model is CorrelationRequest:
        encoding[IMAGE_FIELD] = {"contentType": "image/png, image/jpeg"}
    return encoding


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
