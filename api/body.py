"""Read a request body: JSON only, strictly parsed, then validated by a pydantic model."""

from typing import TypeVar

import orjson
from flask import current_app, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from api.problems import ProblemError, invalid_request
from shared.schemas import Limits, Problem

Model = TypeVar("Model", bound=BaseModel)


def parse_body(model: type[Model], limits: Limits) -> Model:
    """Return the body validated as `model`, or raise the problem that says what is wrong with it.

    orjson refuses what is not JSON (NaN, invalid UTF-8, nesting deeper than
    1024) with a ValueError instead of a RecursionError, so no body can crash
    the parser. Flask enforces the body size (413) when the data is read.
    """
    if not request.is_json:
        got = request.mimetype or "no content type"
        raise ProblemError(
            Problem(title="Unsupported Media Type", status=415, detail=f"send the body as application/json, not {got}")
        )
    try:
        data = orjson.loads(request.get_data(cache=False))
    except RequestEntityTooLarge:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        detail = f"the body is over this server's limit of {limit} bytes (MAX_BODY_BYTES)"
        raise ProblemError(Problem(title="Content Too Large", status=413, detail=detail)) from None
    except orjson.JSONDecodeError as error:
        raise ProblemError(
            Problem(
                type="/problems/malformed-json",
                title="Malformed JSON",
                status=400,
                detail=f"the body is not valid JSON: {error}",
            )
        ) from None
    try:
        return model.model_validate(data, context=limits)
    except ValidationError as error:
        raise invalid_request(error) from None
