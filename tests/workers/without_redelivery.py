"""The shipped worker with task_reject_on_worker_lost off: the negative control of the redelivery test."""

from worker.celery_app import app

app.conf.task_reject_on_worker_lost = False
