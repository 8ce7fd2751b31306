"""Who is calling: optional API keys, and rate limits on submissions per caller.

With API_KEYS set, every /v1 route needs `Authorization: Bearer <key>` and a
caller sees only the jobs its key created. Keys are compared in constant time
and never logged. Without keys, everyone is the same anonymous caller.
"""

import hmac
import logging
import math
import time

from flask import Flask, Response, g, request
from flask_limiter import Limiter, RequestLimit

from api.problems import ProblemError, problem_response
from api.runtime import runtime
from shared.redis_clients import limiter_storage
from shared.response_models import Problem
from shared.settings import Settings

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"
SUBMISSIONS = {"v1.submit_correlation", "v1.submit_kernel_training"}


def key_owner(keys: dict[str, str], token: str) -> str | None:
    """The name of the key equal to `token`; every key is compared, each in constant time."""
    owner = None
    for name, key in keys.items():
        if hmac.compare_digest(key.encode(), token.encode()):
            owner = name
    return owner


def caller() -> str | None:
    """The calling key's name, ANONYMOUS when keys are off, None when the credentials are missing or wrong.

    Worked out once per request (the rate limiter asks before authenticate runs).
    """
    if "caller" not in g:
        keys = runtime().settings.api_keys
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if not keys:
            g.caller = ANONYMOUS
        else:
            g.caller = key_owner(keys, token.strip()) if scheme.lower() == "bearer" else None
    return g.caller


def authenticate() -> None:
    """Before every /v1 request: make sure g.caller names a key, or answer 401."""
    if caller() is None:
        problem = Problem(
            type="/problems/unauthorized",
            title="Unauthorized",
            status=401,
            detail="send a valid API key as 'Authorization: Bearer <key>'",
        )
        raise ProblemError(problem, {"WWW-Authenticate": 'Bearer realm="convq"'})


def caller_key() -> str:
    """Who to count a request against: the key; the client address when keys are off (or the credentials are wrong)."""
    name = caller()
    return f"key:{name}" if name not in (None, ANONYMOUS) else f"address:{request.remote_addr}"


def _too_many(limit: RequestLimit) -> Response:
    retry_after = max(1, math.ceil(limit.reset_at - time.time()))
    detail = f"over {limit.limit} submissions for this key (SUBMIT_RATE_LIMIT); retry in {retry_after} s"
    problem = Problem(type="/problems/rate-limited", title="Too Many Requests", status=429, detail=detail)
    return problem_response(problem, {"Retry-After": str(retry_after)})


def init_app(app: Flask, settings: Settings) -> None:
    """Limit submissions per caller (one budget for both kinds), counted in Redis so every process shares it."""
    storage_uri, storage_options = limiter_storage(settings, socket_timeout=settings.redis_timeout_seconds)
    Limiter(
        caller_key,
        app=app,
        application_limits=[settings.submit_rate_limit],
        application_limits_exempt_when=lambda: request.endpoint not in SUBMISSIONS,
        on_breach=_too_many,
        swallow_errors=True,  # Redis away: the submission itself answers 503
        storage_uri=storage_uri,
        storage_options=storage_options,
    )
