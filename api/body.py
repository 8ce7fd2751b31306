"""Read a request body: JSON only, strictly parsed, then validated by a pydantic model."""

from typing import TypeVar

import jiter
from flask import current_app, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from api.problems import ProblemError, invalid_request
from shared.schemas import Limits, Problem

Model = TypeVar("Model", bound=BaseModel)


def parse_body(model: type[Model], limits: Limits, alternative: str = "") -> Model:
    """Return the body validated as `model`, or raise the problem that says what is wrong with it.

    jiter refuses what is not strict JSON (NaN, invalid UTF-8, duplicate keys,
    nesting deeper than about 200) with a ValueError, never a RecursionError, so no
    body can crash the parser. Flask enforces the body size when the data is read.
    `alternative` names another content type the route takes, for the 415's detail.
    """
    if not request.is_json:
        got = request.mimetype or "no content type"
        wanted = f"application/json or {alternative}" if alternative else "application/json"
        raise ProblemError(Problem(title="Unsupported Media Type", status=415, detail=f"send {wanted}, not {got}"))
    try:
        data = jiter.from_json(request.get_data(cache=False), allow_inf_nan=False, catch_duplicate_keys=True)
    except RequestEntityTooLarge:
        raise body_too_large() from None
    except ValueError as error:
        raise ProblemError(
            Problem(
                type="/problems/malformed-json",
                title="Malformed JSON",
                status=400,
                detail=f"the body is not valid JSON: {error}",
            )
        ) from None
    return validate(model, data, limits)


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
