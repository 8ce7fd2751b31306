"""Requests that hold a thread for long (event streams, `Prefer: wait` submissions) get a bounded share of it.

Each gunicorn process serves API_THREADS requests at once, and an /events
stream holds its thread for up to MAX_STREAM_SECONDS, a waiting submission for
up to MAX_WAIT_SECONDS. Without a bound, a few hundred open streams take every
thread and /healthz and everyone else's requests wait in gunicorn's queue. So
each process lets at most MAX_HELD_REQUESTS such requests hold a thread, at most
MAX_HELD_REQUESTS_PER_CALLER of them from one caller (an API key, or a client
address when keys are off); the rest of the threads stay free for short
requests. A stream beyond the bound is refused at once (429 for a caller over
its share, 503 when the process's share is taken) with Retry-After; a waiting
submission beyond it is queued as usual and answered 202 at once, its
preference not applied (RFC 7240 lets a server ignore a preference).
"""

import threading
from collections import Counter

from flask import Flask, Response, current_app

from api.problems import ProblemError
from shared.response_models import Problem

RETRY_AFTER_SECONDS = 5


class Holds:
    """Counts of the requests holding a thread in this process: in all, and per caller."""

    def __init__(self, total: int, per_caller: int):
        self.total, self.per_caller = total, per_caller
        self._lock = threading.Lock()
        self._held: Counter[str] = Counter()

    def take(self, caller: str) -> str | None:
        """Take a place for `caller`; None if one was free, else why not ("caller" or "process")."""
        with self._lock:
            if self._held[caller] >= self.per_caller:
                return "caller"
            if self._held.total() >= self.total:
                return "process"
            self._held[caller] += 1
            return None

    def give_back(self, caller: str) -> None:
        with self._lock:
            self._held[caller] -= 1
            if self._held[caller] <= 0:
                del self._held[caller]


def holds() -> Holds:
    return current_app.extensions["convq.holds"]


def try_hold(caller: str) -> bool:
    """Take a place for a waiting submission, or say there is none (the caller then does not wait)."""
    return holds().take(caller) is None


def give_back(caller: str) -> None:
    holds().give_back(caller)


def hold_or_refuse(caller: str, what: str) -> None:
    """Take a place for a stream, or raise the 429 or 503 that says whose share is taken."""
    refused = holds().take(caller)
    if refused is None:
        return
    rules = holds()
    if refused == "caller":
        detail = (
            f"this caller already holds {rules.per_caller} {what} on this server process "
            f"(MAX_HELD_REQUESTS_PER_CALLER); close one or retry in {RETRY_AFTER_SECONDS} s"
        )
        problem = Problem(type="/problems/too-many-held", title="Too Many Requests", status=429, detail=detail)
    else:
        detail = (
            f"this server process already holds {rules.total} streams and waiting requests (MAX_HELD_REQUESTS); "
            f"retry in {RETRY_AFTER_SECONDS} s"
        )
        problem = Problem(type="/problems/busy", title="Service Unavailable", status=503, detail=detail)
    raise ProblemError(problem, {"Retry-After": str(RETRY_AFTER_SECONDS)})


def release_on_close(response: Response, caller: str) -> Response:
    """Give the place back when the server closes the response (the stream ended or its client went away)."""
    rules = holds()  # the app context is gone by the time the server closes the response
    response.call_on_close(lambda: rules.give_back(caller))
    return response


def init_app(app: Flask, total: int, per_caller: int) -> None:
    app.extensions["convq.holds"] = Holds(total, per_caller)
