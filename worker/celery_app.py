"""The worker's Celery app: `celery -A worker.celery_app worker`."""

import os

import torch
from celery.signals import worker_process_init

from shared.settings import get_settings
from shared.taskqueue import create_celery

app = create_celery(get_settings())
app.conf.include = ["worker.tasks"]


@worker_process_init.connect
def _size_torch_threads(**_) -> None:
    """Give each forked pool child its share of the cores.

    Set in the child, after fork: torch's thread pool does not survive fork,
    and children that each take every core oversubscribe the machine.
    """
    children = app.conf.worker_concurrency or os.cpu_count() or 1
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // children))
