"""Service endpoints: /healthz (the process is alive) and /readyz (it can do its work)."""

from flask import Blueprint, Response
from redis.exceptions import RedisError

from api.problems import ProblemError
from api.responses import json_response
from api.runtime import runtime
from shared.schemas import Problem

bp = Blueprint("health", __name__)

WORKER_PING_TIMEOUT_SECONDS = 1.0


@bp.get("/healthz")
def healthz() -> Response:
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Ready when Redis answers and at least one worker answers a ping."""
    rt = runtime()
    try:
        rt.store.ping()
    except RedisError as error:
        raise _not_ready(f"Redis is not reachable: {error}") from None
    workers = rt.queue.control.ping(timeout=WORKER_PING_TIMEOUT_SECONDS)
    if not workers:
        raise _not_ready(f"no worker answered a ping within {WORKER_PING_TIMEOUT_SECONDS:g} s")
    return json_response({"status": "ready", "redis": "ok", "workers": len(workers)})


def _not_ready(detail: str) -> ProblemError:
    return ProblemError(
        Problem(type="/problems/not-ready", title="Not Ready", status=503, detail=detail), {"Retry-After": "5"}
    )
