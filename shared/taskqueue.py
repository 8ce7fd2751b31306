"""The Celery app as the API and the workers both configure it; tasks are known here by name only.

The API sends tasks by name, so it never imports the worker (nor torch). A
message carries a job id; the job store holds everything else, so Celery's
result backend is not used at all.
"""

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import orjson
from celery import Celery
from kombu import Queue
from redis import Redis

from shared.redis_clients import broker_transport_options, broker_url
from shared.response_models import JobKind
from shared.settings import Settings

TASK_FOR_KIND: dict[JobKind, str] = {
    "correlation": "convq.correlate",
    "kernel_training": "convq.train_kernel",
}

BROKER_SOCKET_TIMEOUT_SECONDS = 5
# Celery queue per device class, of this release's stored format (shared.packing): a worker of the previous
# release never takes a job it could not read...
QUEUE_NAMES = {"cpu": "convq.cpu", "gpu": "convq.gpu"}
# ...while this release's workers also take the queues of the previous release's jobs, so they survive an upgrade.
LEGACY_QUEUE_NAMES = {"cpu": "celery", "gpu": "gpu"}
# kombu's Redis transport keeps each message a worker has taken and not yet acknowledged in this hash
# (delivery tag -> [message, exchange, routing key]) until it is acknowledged or put back in its queue.
UNACKED_KEY = "unacked"


class Route(NamedTuple):
    """Where a job's message goes: its device class (cpu, gpu), that class's Celery queue, and how many it holds."""

    device: str
    queue: str  # "": no queue to check
    capacity: int


UNCHECKED_CPU_QUEUE = Route("cpu", "", 2**53)


class QueueFull(Exception):
    """The queue holds as many messages as it may: the job was not created."""


def route(settings: Settings, device: str, work: int) -> Route:
    """The queue that takes a job: the one of the device class the request asks, or, for "auto", by its work."""
    if device == "auto":
        device = "gpu" if settings.gpu_queue and work >= settings.gpu_min_work else "cpu"
    return Route(device, QUEUE_NAMES[device], settings.max_queue_length)


def create_celery(settings: Settings) -> Celery:
    """Create the Celery app configured from settings."""
    app = Celery("convq", broker=broker_url(settings), set_as_current=False)
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
        }
        | broker_transport_options(settings),
        broker_connection_retry_on_startup=True,
        # An error reply from Redis in the worker's consumer (a full Redis refuses kombu's bookkeeping of a
        # delivered message) restarts the consumer instead of ending the worker with "Unrecoverable error";
        # the job of a message lost that way stays queued until the reconciler sends it again.
        broker_channel_error_retry=True,
        worker_concurrency=settings.worker_concurrency,
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child,
        worker_max_memory_per_child=settings.worker_max_memory_per_child_mb * 1024,  # KiB
        # With REMAP_SIGTERM=SIGQUIT (bin/worker), SIGTERM waits this long, then hands running jobs back.
        worker_soft_shutdown_timeout=settings.shutdown_grace_seconds,
        # A worker takes jobs from these queues; the API names the queue of each job it sends.
        task_default_queue=QUEUE_NAMES["cpu"],
        task_queues=[
            Queue(names[device])
            for device in settings.worker_queues.split(",")
            for names in (QUEUE_NAMES, LEGACY_QUEUE_NAMES)
        ],
    )
    return app


def queue_lengths(redis: Redis) -> dict[str, int]:
    """How many messages wait in each device class's queues (not those a worker holds): their Redis lists, read fast."""
    return {device: redis.llen(name) + redis.llen(LEGACY_QUEUE_NAMES[device]) for device, name in QUEUE_NAMES.items()}


@dataclass(frozen=True)
class Messages:
    """The jobs that have a message in Redis: waiting in a queue or held (unacknowledged) by a worker."""

    job_ids: frozenset[str]
    complete: frozenset[str]  # the queues read in full; a longer queue was read only at its consuming end


def messages_in_redis(redis: Redis, queues: Iterable[str], window: int) -> Messages:
    """The job ids of the messages in `queues` (up to `window` of each, the next to be delivered) and held by workers.

    One transaction, so that a message moving between a queue and the unacknowledged hash is seen in one of them.
    """
    queues = list(queues)
    with redis.pipeline(transaction=True) as pipe:
        for queue in queues:
            pipe.lrange(queue, -window - 1, -1)  # BRPOP takes from the right: the end read first
        pipe.hvals(UNACKED_KEY)
        *waiting, held = pipe.execute()
    raw = [message for messages in waiting for message in messages]
    raw += [message for message in (_first(entry) for entry in held) if message is not None]
    job_ids = frozenset(job_id for job_id in map(_job_id, raw) if job_id is not None)
    complete = frozenset(queue for queue, messages in zip(queues, waiting, strict=True) if len(messages) <= window)
    return Messages(job_ids, complete)


def _first(entry: bytes) -> dict | None:
    try:
        return orjson.loads(entry)[0]
    except (orjson.JSONDecodeError, IndexError, KeyError, TypeError):
        return None


def _job_id(message: bytes | dict) -> str | None:
    """The job id a Celery message carries (its first argument), or None for a message that is not a job's."""
    try:
        if isinstance(message, bytes | str):
            message = orjson.loads(message)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = orjson.loads(body)
        args = args[0] if isinstance(args, list) else args["args"]  # Celery's protocol 2, else 1
        return args[0] if args and isinstance(args[0], str) else None
    except (orjson.JSONDecodeError, binascii.Error, KeyError, IndexError, TypeError, AttributeError):
        return None
