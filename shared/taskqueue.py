"""The Celery app as the API and the workers both configure it; tasks are known here by name only.

The API sends tasks by name, so it never imports the worker (nor torch). A
message carries a job id; the job store holds everything else, so Celery's
result backend is not used at all.
"""

from celery import Celery
from kombu import Queue

from shared.jobstore import Route
from shared.schemas import JobKind
from shared.settings import Settings

TASK_FOR_KIND: dict[JobKind, str] = {
    "correlation": "convq.correlate",
    "kernel_training": "convq.train_kernel",
}

BROKER_SOCKET_TIMEOUT_SECONDS = 5
# Celery queue per device class; the CPU one keeps Celery's default name, so queued jobs survive an upgrade.
QUEUE_NAMES = {"cpu": "celery", "gpu": "gpu"}


def route(settings: Settings, device: str, work: int) -> Route:
    """The queue that takes a job: the one of the device class the request asks, or, for "auto", by its work."""
    if device == "auto":
        device = "gpu" if settings.gpu_queue and work >= settings.gpu_min_work else "cpu"
    return Route(device, QUEUE_NAMES[device], settings.max_queue_length)


def create_celery(settings: Settings) -> Celery:
    """Create the Celery app configured from settings."""
    app = Celery("convq", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],  # never pickle
        task_ignore_result=True,  # the job store is the one source of truth
        # Acknowledge after the run and hand the message back if the worker process dies,
        # so a killed worker loses no job (the job store makes a rerun safe).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Task events feed Flower and `celery events` but cost a tiny job about 11 ms (2 cores, measured):
        # off unless TASK_EVENTS is set. Flower turns them on in running workers by itself.
        worker_send_task_events=settings.task_events,
        task_send_sent_event=settings.task_events,
        task_time_limit=settings.job_time_limit_seconds,
        task_soft_time_limit=settings.soft_time_limit_seconds,
        # Redis only imitates acknowledgement: a delivered message goes back to the queue once it is
        # older than the visibility timeout, so that must exceed the hard time limit; the sweep that
        # puts it back runs every restore_sweep_seconds (kombu's default is about every 100 s).
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_seconds,
            "unacked_restore_interval": settings.restore_sweep_seconds,
            "unacked_restore_throttle": 1,
            # Above kombu's 1 s BRPOP poll, or an idle worker would see timeouts.
            "socket_timeout": BROKER_SOCKET_TIMEOUT_SECONDS,
            "socket_connect_timeout": BROKER_SOCKET_TIMEOUT_SECONDS,
        },
        broker_connection_retry_on_startup=True,
        worker_concurrency=settings.worker_concurrency,
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child,
        worker_max_memory_per_child=settings.worker_max_memory_per_child_mb * 1024,  # KiB
        # With REMAP_SIGTERM=SIGQUIT (bin/worker), SIGTERM waits this long, then hands running jobs back.
        worker_soft_shutdown_timeout=settings.shutdown_grace_seconds,
        # A worker takes jobs from these queues; the API names the queue of each job it sends.
        task_default_queue=QUEUE_NAMES["cpu"],
        task_queues=[Queue(QUEUE_NAMES[device]) for device in settings.worker_queues.split(",")],
    )
    return app
