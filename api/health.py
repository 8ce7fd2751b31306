"""Service endpoints: /healthz (the process is alive) and /readyz (it can do its work).

/readyz needs no key, so what it says names no address, host or error text:
those go to the log.
"""

import logging
import threading
import time

from flask import Blueprint, Response, current_app
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.problems import ProblemError
from api.responses import json_response
from api.runtime import Runtime, runtime
from shared.response_models import Problem

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)

WORKER_PING_TIMEOUT_SECONDS = 1.0
# Probes from load balancers and compose come often; one real check per process per this long.
READINESS_CACHE_SECONDS = 2.0


@bp.get("/healthz")
def healthz() -> Response:
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Ready when both Redises answer and at least one worker answers a ping, checked at most every 2 s."""
    probe = current_app.extensions.setdefault("convq.readiness", Readiness())
    problem, body = probe.check(runtime())
    if problem is not None:
        raise ProblemError(problem, {"Retry-After": str(int(READINESS_CACHE_SECONDS))})
    return json_response(body)


class Readiness:
    """The latest readiness verdict of this process, and when it was reached."""

    def __init__(self):
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._verdict: tuple[Problem | None, dict | None] = (None, None)

    def check(self, rt: Runtime) -> tuple[Problem | None, dict | None]:
        with self._lock:
            if time.monotonic() - self._checked_at >= READINESS_CACHE_SECONDS:
                self._verdict = self._probe(rt)
                self._checked_at = time.monotonic()
            return self._verdict

    @staticmethod
    def _probe(rt: Runtime) -> tuple[Problem | None, dict | None]:
        try:
            rt.store.ping()
            memory = rt.store.memory()
        except (RedisConnectionError, RedisTimeoutError) as error:
            log.warning("readiness: Redis is not reachable: %s", error)
            return _not_ready("Redis is not reachable: jobs can be neither stored nor queued"), None
        except Exception as error:
            log.warning("readiness: Redis answered with an error: %r", error)
            return _not_ready("Redis (the job store and queue) answered with an error; see the API's log"), None
        if memory.full:
            detail = (
                f"Redis is full: it refuses writes at {memory.used_mib:.1f} MiB used of its maxmemory "
                f"{memory.max_mib:.1f} MiB, so submissions are refused (507) until jobs expire or room is made"
            )
            return _not_ready(detail), None
        try:
            rt.store.ping_bulk()
        except RedisError as error:
            log.warning("readiness: the bulk Redis is not reachable: %s", error)
            return _not_ready(
                "the bulk Redis (BULK_REDIS_URL) is not reachable: big arrays can be neither stored nor read"
            ), None
        try:
            workers = rt.queue.control.ping(timeout=WORKER_PING_TIMEOUT_SECONDS)
        except Exception as error:
            log.warning("readiness: could not ping the workers: %r", error)
            return _not_ready("could not ping the workers through Redis; see the API's log"), None
        if not workers:
            return _not_ready(f"no worker answered a ping within {WORKER_PING_TIMEOUT_SECONDS:g} s"), None
        return None, {"status": "ready", "redis": "ok", "workers": len(workers)}


def _not_ready(detail: str) -> Problem:
    return Problem(type="/problems/not-ready", title="Not Ready", status=503, detail=detail)
