"""The reconciler: no job stays queued or running forever because its queue message is gone.

A message can vanish while its job lives on: the API stored a job and died
(or Redis refused the message) before sending it; a full Redis made kombu
lose a message it had just taken from the queue; a worker acknowledged a
message without recording the job's end. kombu's restore sweep cannot bring
back what is in neither its queue nor its unacknowledged hash, so beside it
every worker runs this sweep, at the same interval (RESTORE_SWEEP_SECONDS),
in a thread of its main process; a lock in Redis lets one worker sweep per
interval.

Each sweep looks only at the jobs due in the job store's index of unfinished
jobs (at most SWEEP_LIMIT, by score: no KEYS, no SCAN): queued ones a few
sweeps after their submission, running ones once their attempt is past the
point where kombu would have redelivered its message. A due job whose
message is waiting in its queue or held by a worker is looked at again
later; one with no message anywhere gets a new message (a requeue), and a
job requeued more than MAX_ATTEMPTS times fails with an error that says so.
A requeued running job starts a new attempt, which counts towards
MAX_ATTEMPTS as a redelivery does.
"""

import contextlib
import logging
import socket
import threading

from celery import Celery

from shared.jobstore import DueJob, JobStore
from shared.response_models import Problem
from shared.settings import Settings
from shared.taskqueue import LEGACY_QUEUE_NAMES, QUEUE_NAMES, TASK_FOR_KIND, messages_in_redis

log = logging.getLogger(__name__)

SWEEP_LIMIT = 100  # due jobs looked at per sweep
# Messages read from the consuming end of each queue per sweep; a longer queue cannot be searched in full,
# so a job due behind it is looked at again later (its message, if any, is among those not read).
QUEUE_WINDOW = 1000


def sweep(store: JobStore, queue: Celery, settings: Settings) -> dict[str, int]:
    """Look at the due jobs once; return how many were found with a message, requeued, failed or put off."""
    due = store.due_jobs(SWEEP_LIMIT)
    if not due:
        return {}
    messages = messages_in_redis(store.redis, [*QUEUE_NAMES.values(), *LEGACY_QUEUE_NAMES.values()], QUEUE_WINDOW)
    held = [job.id for job in due if job.id in messages.job_ids]
    undecided = [job.id for job in due if job.id not in held and not _read_in_full(job.device, messages.complete)]
    store.look_again(held + undecided, store.message_check_seconds)
    counts = {"with_message": len(held), "undecided": len(undecided), "requeued": 0, "failed": 0}
    for job in due:
        if job.id not in held and job.id not in undecided:
            try:
                counts[_resolve(store, queue, settings, job)] += 1
            except Exception as error:  # one job's trouble must not stop the sweep from reaching the others
                log.warning("reconciler: could not requeue job %s: %r", job.id, error)
                counts["undecided"] += 1
                with contextlib.suppress(Exception):
                    store.look_again([job.id], store.message_check_seconds)  # not first in line again
    return counts


def _read_in_full(device: str, complete: frozenset[str]) -> bool:
    """Whether every queue a job of that device class may wait in was read in full."""
    return QUEUE_NAMES[device] in complete and LEGACY_QUEUE_NAMES[device] in complete


def _resolve(store: JobStore, queue: Celery, settings: Settings, job: DueJob) -> str:
    """Send a new message for a due job that has none, or fail it when that was done too often."""
    outcome = store.reconcile(job, settings.max_attempts)
    if outcome == "requeue":
        log.warning("job %s was %s with no queue message; sending it again", job.id, job.status)
        # Should this fail, the job is due again after message_check_seconds, and is requeued then.
        queue.send_task(TASK_FOR_KIND[job.kind], args=[job.id], queue=QUEUE_NAMES[job.device])
        return "requeued"
    if outcome == "exhausted":
        detail = (
            f"the job's queue message was lost more than {settings.max_attempts} times "
            "(Redis full or restarted, or a worker lost); it will not be retried"
        )
        problem = Problem(type="/problems/message-lost", title="Message lost", status=500, detail=detail)
        store.fail(job.id, None, problem)
        log.error("job %s failed: %s", job.id, detail)
        return "failed"
    return "undecided"  # the job moved on meanwhile, or ended: nothing to do


class Reconciler(threading.Thread):
    """The sweep, every RESTORE_SWEEP_SECONDS, in a daemon thread of a worker's main process."""

    def __init__(self, queue: Celery, settings: Settings):
        super().__init__(name="convq-reconciler", daemon=True)
        self.queue, self.settings = queue, settings
        self.stopped = threading.Event()
        self.owner = f"{socket.gethostname()}:{threading.get_native_id()}"

    def run(self) -> None:
        store = JobStore.from_settings(self.settings)
        interval = self.settings.restore_sweep_seconds
        while not self.stopped.wait(interval):
            try:
                if store.claim_sweep(self.owner, interval * 0.9):
                    counts = sweep(store, self.queue, self.settings)
                    if counts.get("requeued") or counts.get("failed"):
                        log.info("reconciler: %s", counts)
            except Exception as error:  # Redis away or full: the next sweep tries again; never end the thread
                log.warning("reconciler sweep failed: %r", error)

    def stop(self) -> None:
        self.stopped.set()
