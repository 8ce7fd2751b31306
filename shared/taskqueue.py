"""The Celery app as the API and the workers both configure it; tasks are known here by name only.

The API sends tasks by name, so it never imports the worker (nor torch). A
message carries a job id; the job store holds everything else, so Celery's
result backend is not used at all.
"""

from celery import Celery

from shared.schemas import JobKind
from shared.settings import Settings

TASK_FOR_KIND: dict[JobKind, str] = {
    "correlation": "convq.correlate",
    "kernel_training": "convq.train_kernel",
}

# Redis hands an unacknowledged message to another worker after this long past the hard time limit.
REDELIVERY_MARGIN_SECONDS = 60


def create_celery(settings: Settings) -> Celery:
    """Create the Celery app configured from settings."""
    app = Celery("convq", broker=settings.redis_url, set_as_current=False)
    time_limit = settings.job_time_limit_seconds
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],  # never pickle
        task_ignore_result=True,  # the job store is the one source of truth
        # Acknowledge after the run and hand the message back if the worker process dies,
        # so a killed worker loses no job (the job store makes a rerun safe).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=time_limit,
        task_soft_time_limit=max(1, time_limit - 5),
        broker_transport_options={
            "visibility_timeout": time_limit + REDELIVERY_MARGIN_SECONDS,
            "socket_timeout": settings.redis_timeout_seconds,
            "socket_connect_timeout": settings.redis_timeout_seconds,
        },
        broker_connection_retry_on_startup=True,
        worker_concurrency=settings.worker_concurrency,
    )
    return app
