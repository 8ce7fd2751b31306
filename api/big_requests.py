"""A request with a big body is served at a lower priority, so that small jobs' requests win the cores meanwhile.

Big: over INLINE_BYTES (arrays bound for the bulk Redis), or of a length not given
(chunked). Reading, checking and storing its arrays is what lowers the thread's
priority (shared.priority); the answer is sent at the thread's own priority again.
"""

from collections.abc import Callable

from shared.jobstore import INLINE_BYTES
from shared.priority import lowered

WsgiApp = Callable[[dict, Callable], object]


def yielding_when_big(wsgi_app: WsgiApp, niceness: int) -> WsgiApp:
    """`wsgi_app`, serving each big request at `niceness` more (shared.priority.lowered)."""

    def serve(environ: dict, start_response: Callable) -> object:
        with lowered(niceness if _big(environ) else 0):
            return wsgi_app(environ, start_response)

    return serve


def _big(environ: dict) -> bool:
    length = environ.get("CONTENT_LENGTH", "")
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    return chunked or (length.isdigit() and int(length) > INLINE_BYTES)
