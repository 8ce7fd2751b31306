"""Read a request body: JSON only, strictly parsed, then validated by a pydantic model."""

from typing import TypeVar

import jiter
from flask import current_app, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from api import bulk
from api.problems import ProblemError, invalid, invalid_request, json_pointer
from shared.response_models import Problem
from shared.shapes import Limits

READ_BYTES = 1024 * 1024

Model = TypeVar("Model", bound=BaseModel)


def parse_body(model: type[Model], limits: Limits, alternative: str = "") -> Model:
    """Return the body validated as `model`, or raise the problem that says what is wrong with it.

    jiter refuses what is not strict JSON (NaN, invalid UTF-8, duplicate keys,
    nesting deeper than about 200) with a ValueError, never a RecursionError, so no
    body can crash the parser. Flask enforces the body size when the data is read.
    Long arrays never reach the parser: api/bulk.py reads them into float32 first,
    so a body costs at most about 3 times its size.
    `alternative` names another content type the route takes, for the 415's detail.
    """
    if not request.is_json:
        got = request.mimetype or "no content type"
        wanted = f"application/json or {alternative}" if alternative else "application/json"
        raise ProblemError(Problem(title="Unsupported Media Type", status=415, detail=f"send {wanted}, not {got}"))
    try:
        cut = bulk.cut_arrays(_read_body(), limits.max_matrix_elements)
        data = jiter.from_json(cut.rest, allow_inf_nan=False, catch_duplicate_keys=True)
    except RequestEntityTooLarge:
        raise body_too_large() from None
    except bulk.TooManyNumbers as error:
        raise ProblemError(Problem(title="Content Too Large", status=413, detail=str(error))) from None
    except ValueError as error:  # jiter's, and bulk.Malformed
        raise ProblemError(
            Problem(
                type="/problems/malformed-json",
                title="Malformed JSON",
                status=400,
                detail=f"the body is not valid JSON: {error}",
            )
        ) from None
    try:
        data = bulk.swap_in(data, cut.arrays)
        del cut  # the rest of the body: no longer needed while the models check and copy the arrays
    except bulk.RefusedAt as refused:
        pointer = json_pointer((*refused.loc, *refused.refused.element))
        fault = {"loc": pointer, "msg": refused.refused.message, "type": refused.refused.kind}
        raise invalid(422, "the request has 1 error", [fault]) from None
    return validate(model, data, limits)


def _read_body() -> bytearray:
    """The body, read once into a buffer api/bulk.py may change in place (no second copy of a big body)."""
    stream, length = request.stream, request.content_length  # the stream stops at MAX_CONTENT_LENGTH
    if length is None:
        body = bytearray()
        while chunk := stream.read(READ_BYTES):
            body += chunk
        return body
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if limit is not None and length > limit:
        raise RequestEntityTooLarge()
    body = bytearray(length)
    view, got = memoryview(body), 0
    while got < length:  # a piece at a time: the server's reader copies what it is asked for
        read = stream.readinto(view[got : got + READ_BYTES])
        if not read:
            break
        got += read
    del view
    if got < length:
        del body[got:]
    return body


def validate(model: type[Model], data: object, limits: Limits, renamed: dict[str, str] | None = None) -> Model:
    """`data` validated as `model` against the server's limits, or the 422 that points at each fault."""
    try:
        return model.model_validate(data, context=limits)
    except ValidationError as error:
        raise invalid_request(error, renamed) from None


def body_too_large() -> ProblemError:
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    detail = f"the body is over this server's limit of {limit} bytes (MAX_BODY_BYTES)"
    return ProblemError(Problem(title="Content Too Large", status=413, detail=detail))
