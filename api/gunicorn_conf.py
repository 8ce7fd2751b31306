"""Gunicorn settings for the API, derived from convq's settings."""

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
from gunicorn import util
from gunicorn.workers import gthread
from prometheus_client import multiprocess

from shared.logs import logging_config
from shared.redis_clients import connect, replicated
from shared.settings import get_settings
from shared.startup import warn_about_redis, warn_if_open

_settings = get_settings()

bind = f"{_settings.host}:{_settings.port}"
# Threads, so that open event streams and slow clients do not starve the other requests.
worker_class = "gthread"
workers = 2
threads = _settings.api_threads
# The app logs each request as JSON (api/telemetry.py); gunicorn's own lines are JSON too.
accesslog = None
# No request-line cap in gunicorn: its 414 would be HTML; the app caps URLs with a problem+json 414.
limit_request_line = 0
# No control socket (gunicornc): its default path is one per user, which every API on the machine would share,
# and in an image the user's home is not writable.
control_socket_disable = True
logconfig_dict = logging_config(_settings.log_level, "api", _settings.log_format)


def write_problem(sock, status_int: int, reason: str, mesg: str) -> None:
    """Gunicorn's own answers (a malformed request line, headers too long) as problem+json, like the app's.

    Gunicorn writes them before the app sees the request, through `gunicorn.util.write_error`, in HTML.
    """
    detail = mesg if len(mesg) <= 200 else mesg[:200] + "..."  # it may quote the request line: never echo megabytes
    body = orjson.dumps({"type": "about:blank", "title": reason, "status": status_int, "detail": detail})
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/problem+json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


# The workers call util.write_error by its module attribute: replaced here, before they fork.
util.write_error = write_problem


# gunicorn 27's gthread worker closes a connection that ends with "Connection: close" (or HTTP/1.0) gracefully,
# lingering up to 2 s for the client's FIN, on the thread that runs its event loop: a client that sends such
# requests and keeps its sockets open stalls every request of that process, 2 s per connection (measured: with
# 100 refused streams left open, /healthz and a DELETE timed out after 3 s and 30 s). The lingering is kept,
# on threads of its own.
_closer: ThreadPoolExecutor | None = None
_close = gthread.TConn.close


def _close_aside(conn: gthread.TConn, graceful: bool = False) -> None:
    if graceful and _closer is not None:
        conn.sock.setblocking(True)
        _closer.submit(util.close_graceful, conn.sock)
    else:
        _close(conn, graceful)


gthread.TConn.close = _close_aside


def post_worker_init(worker) -> None:
    global _closer
    _closer = ThreadPoolExecutor(max_workers=32, thread_name_prefix="graceful-close")


def on_starting(server) -> None:
    """Start the metrics from zero: files left by an earlier run would be added in."""
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)


def child_exit(server, worker) -> None:
    multiprocess.mark_process_dead(worker.pid)


def when_ready(server) -> None:
    """Warn about open access and a risky Redis once, in the master, instead of once per worker process."""
    warn_if_open(_settings)
    with connect(_settings, socket_timeout=5) as redis:
        warn_about_redis(redis, replicated(_settings))
