"""Gunicorn settings for the API, derived from convq's settings."""

import os
import shutil
from pathlib import Path

from prometheus_client import multiprocess
from redis import Redis

from shared.logs import logging_config
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
    with Redis.from_url(_settings.redis_url, socket_timeout=5) as redis:
        warn_about_redis(redis)
