"""The worker's Celery app: `celery -A worker.celery_app worker`."""

import os
import warnings

import torch
from celery.exceptions import SecurityWarning
from celery.signals import setup_logging, worker_process_init, worker_ready, worker_shutdown

from shared.logs import configure_logging
from shared.redis_clients import connect, replicated
from shared.settings import get_settings
from shared.startup import check_settings, warn_about_redis
from shared.taskqueue import create_celery
from worker.reconciler import Reconciler

check_settings(get_settings())
app = create_celery(get_settings())
app.conf.include = ["worker.tasks"]
if get_settings().environment == "development":
    # Celery warns whenever it runs as root; in development (make run in a container or on CI, as root) that is
    # the norm and the warning noise; production keeps it (compose runs the worker as uid 10001 anyway).
    warnings.filterwarnings("ignore", "You're running the worker with superuser privileges", SecurityWarning)


@setup_logging.connect
def _log_json(**_) -> None:
    """Log as the API does (one JSON object per line) instead of Celery's own format."""
    configure_logging(get_settings().log_level, "worker", get_settings().log_format)


_reconciler = Reconciler(app, get_settings())


@worker_ready.connect
def _check_redis(**_) -> None:
    with connect(get_settings(), socket_timeout=5) as redis:
        warn_about_redis(redis, replicated(get_settings()))


@worker_ready.connect
def _start_reconciler(**_) -> None:
    """Sweep for jobs whose message is gone, beside kombu's restore sweep (worker.reconciler); main process only."""
    _reconciler.start()


@worker_shutdown.connect
def _stop_reconciler(**_) -> None:
    _reconciler.stop()


@worker_process_init.connect
def _size_torch_threads(**_) -> None:
    """Give each forked pool child its share of the cores.

    Set in the child, after fork: torch's thread pool does not survive fork,
    and children that each take every core oversubscribe the machine.
    """
    children = app.conf.worker_concurrency or os.cpu_count() or 1
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // children))
