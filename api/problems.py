"""Every error the API answers is RFC 9457 problem+json; nothing escapes as HTML or a traceback."""

import logging
import uuid

from flask import Flask, Response, request
from kombu.exceptions import KombuError
from pydantic import ValidationError
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from api.responses import json_bytes
from shared.jobstore import out_of_memory
from shared.response_models import Problem

log = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 50
MAX_URL_LENGTH = 8192
RETRY_UNAVAILABLE_SECONDS = 5
# A full Redis makes room only when jobs expire or an operator acts: ask clients to come back later.
RETRY_FULL_SECONDS = 30


class ProblemError(Exception):
    """Raise to answer with a problem; `errors` point at faults in the request."""

    def __init__(self, problem: Problem, headers: dict[str, str] | None = None):
        super().__init__(problem.detail)
        self.problem = problem
        self.headers = headers or {}


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response:
    body = json_bytes(problem.model_dump(exclude_none=True))
    return Response(body, problem.status, headers=headers, mimetype="application/problem+json")


MAX_LOCATION_PART = 100  # an unknown key is echoed in its location: never echo megabytes


def json_pointer(loc: tuple[str | int, ...]) -> str:
    """Turn a pydantic location into an RFC 6901 JSON pointer: ("input", 3) -> "/input/3"."""
    parts = (str(part)[:MAX_LOCATION_PART].replace("~", "~0").replace("/", "~1") for part in loc)
    return "".join("/" + part for part in parts)


def invalid_request(error: ValidationError, renamed: dict[str, str] | None = None) -> ProblemError:
    """A 422 whose `errors` point at each fault (the first MAX_REPORTED_ERRORS of them).

    `renamed` maps a model field to the name the client sent it under (an uploaded image becomes `input`).
    """
    faults = error.errors(include_url=False, include_input=False, include_context=False)
    shown = faults[:MAX_REPORTED_ERRORS]
    detail = f"the request has {len(faults)} error{'s' if len(faults) > 1 else ''}"
    if len(faults) > len(shown):
        detail += f"; the first {len(shown)} are listed"
    renamed = renamed or {}
    errors = [
        {"loc": json_pointer(_renamed(fault["loc"], renamed)), "msg": fault["msg"], "type": fault["type"]}
        for fault in shown
    ]
    return invalid(422, detail, errors)


def _renamed(loc: tuple[str | int, ...], renamed: dict[str, str]) -> tuple[str | int, ...]:
    return (renamed.get(loc[0], loc[0]), *loc[1:]) if loc else loc


def invalid(status: int, detail: str, errors: list[dict]) -> ProblemError:
    """A 400 or 422 about the request, its `errors` pointing at each fault."""
    problem = Problem(
        type="/problems/invalid-request", title="Invalid request", status=status, detail=detail, errors=errors
    )
    return ProblemError(problem)


class QueueUnavailable(Exception):
    """The job's message could not be sent (the job was discarded); the cause says why, if anything does."""

    def __init__(self, detail: str, *, redis_full: bool = False):
        super().__init__(detail)
        self.redis_full = redis_full  # Redis refuses writes, whatever kombu's error said


STORE_FULL = Problem(
    type="/problems/store-full",
    title="Insufficient Storage",
    status=507,
    detail="Redis (the job store and queue) is full (maxmemory): nothing new can be stored; retry later",
)
STORE_UNAVAILABLE = Problem(
    type="/problems/unavailable",
    title="Service Unavailable",
    status=503,
    detail="Redis (the job store and queue) is not reachable or refused the request; retry shortly",
)


def store_problem(error: BaseException) -> ProblemError:
    """The problem for an error from Redis (job store or queue): 507 when it is full, else 503; both retryable."""
    if out_of_memory(error) or getattr(error, "redis_full", False):
        return ProblemError(STORE_FULL, {"Retry-After": str(RETRY_FULL_SECONDS)})
    return ProblemError(STORE_UNAVAILABLE, {"Retry-After": str(RETRY_UNAVAILABLE_SECONDS)})


def refuse_long_urls() -> None:
    """Cap the URL here, where the answer is problem+json (gunicorn's own cap answers HTML)."""
    if len(request.full_path) > MAX_URL_LENGTH:
        raise ProblemError(
            Problem(title="URI Too Long", status=414, detail=f"the URL is over {MAX_URL_LENGTH} characters")
        )


def init_app(app: Flask) -> None:
    """Register the handlers that render every error as problem+json."""

    @app.errorhandler(ProblemError)
    def _problem(error: ProblemError) -> Response:
        return problem_response(error.problem, error.headers)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        if error.response is not None:  # raised with its own (problem) response, e.g. by the rate limiter
            return error.response
        problem = Problem(title=error.name, status=error.code or 500, detail=error.description or error.name)
        headers = {name: value for name, value in error.get_headers() if name.lower() != "content-type"}
        return problem_response(problem, headers)

    @app.errorhandler(RedisError)  # unreachable, timed out, or an error reply (full: OOM)
    @app.errorhandler(KombuError)  # kombu's, when the broker (the same Redis) is away
    @app.errorhandler(QueueUnavailable)
    def _redis_unavailable(error: Exception) -> Response:
        log.warning("redis unavailable or refusing: %r (cause: %r)", error, error.__cause__)
        refused = store_problem(error)
        return problem_response(refused.problem, refused.headers)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        """Log the traceback under an opaque id and tell the client only that id."""
        incident = f"urn:uuid:{uuid.uuid4()}"
        log.exception("unhandled error %s", incident)
        detail = "an unexpected error occurred; quote the instance id to the operators"
        return problem_response(Problem(title="Internal Server Error", status=500, detail=detail, instance=incident))
