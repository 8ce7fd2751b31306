"""One attempt at one job: start it in the job store, run it, record how it ended.

Whatever happens, the job ends with a status and, when it failed, an error a
person can act on; tracebacks stay in the worker's log. If Redis stays away
longer than the job store's patience, the job is handed back to the queue
rather than failed: Redis, not this process, decides who runs it next.

A full Redis (maxmemory, noeviction) refuses writes with an error reply and
never kills this process. It refuses a training's losses: the training fails
with the store-full error. It never refuses START or FINISH (shared.jobstore_scripts),
so a job always starts and ends, its result passing through FINISH when Redis
refuses it beside. Should Redis refuse a job's start or end all the same (some
other error reply), the job is handed back, its message not acknowledged: back in
the queue, or, when Redis cannot take even that, left with the unacknowledged
ones until the visibility timeout; it is finished once Redis takes writes again.
"""

import contextlib
import logging
import time
from collections.abc import Callable
from functools import lru_cache

import torch
from celery.exceptions import Reject, SoftTimeLimitExceeded
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services import EpochCallback, OutputNotFinite, TrainingDiverged, pick_device
from shared import logs
from shared.jobstore import Attempt, AttemptsExhausted, JobStore, out_of_memory
from shared.packing import load_request
from shared.priority import lowered
from shared.response_models import Problem
from shared.settings import get_settings
from worker.progress import EpochRecorder, ProgressNotRecorded

log = logging.getLogger(__name__)

Compute = Callable[[BaseModel, torch.device, EpochCallback], bytes]
RedisUnavailable = (RedisConnectionError, RedisTimeoutError)
# How long an attempt keeps trying to record its end while Redis refuses it, before handing the job back.
FINISH_PATIENCE_SECONDS = 5.0


@lru_cache
def job_store() -> JobStore:
    """The job store of this worker process, connected on first use (after fork)."""
    return JobStore.from_settings(get_settings(), patient=True)


@lru_cache
def device() -> torch.device:
    return pick_device(get_settings().torch_device)


def run_job(job_id: str, request_model: type[BaseModel], compute: Compute) -> None:
    """Run one attempt at the job, unless it is finished, cancelled or gone."""
    store = job_store()
    job_token = logs.job_id.set(job_id)
    try:
        attempt = store.start(job_id, str(device()))
        if attempt is None:
            log.info("job skipped: cancelled, finished or expired")
            return
        request_token = logs.request_id.set(attempt.request_id)
        try:
            log.info("attempt %d started", attempt.number)
            with lowered(get_settings().big_work_niceness if attempt.big else 0):  # small jobs first
                _run(store, attempt, load_request(request_model, attempt.request), compute)
        finally:
            logs.request_id.reset(request_token)
    except AttemptsExhausted as exhausted:
        log.error("job failed: %s", exhausted)
    except RedisUnavailable as error:
        log.warning("Redis unreachable (%s); handing the job back to the queue", error)
        raise Reject(str(error), requeue=True) from error
    except RedisError as error:  # an error reply that START or FINISH could not ride out (NOREPLICAS, READONLY, ...)
        log.warning("Redis refused a write (%s); handing the job back to the queue", error)
        raise Reject(str(error), requeue=True) from error
    finally:
        logs.job_id.reset(job_token)


def _run(store: JobStore, attempt: Attempt, request: BaseModel, compute: Compute) -> None:
    job_id = attempt.job_id
    started = time.monotonic()
    recorder = EpochRecorder(store, attempt)
    try:
        result = compute(request, device(), recorder)
    except RedisUnavailable:
        raise
    except ProgressNotRecorded as error:
        log.warning("attempt %d stopped: %s", attempt.number, error)
        problem = store_problem(error, f"could not record the training's losses from epoch {error.first_epoch} on")
    except TrainingDiverged as error:
        problem = Problem(type="/problems/training-diverged", title="Training diverged", status=422, detail=str(error))
    except OutputNotFinite as error:
        problem = Problem(type="/problems/output-not-finite", title="Output not finite", status=422, detail=str(error))
    except SoftTimeLimitExceeded:
        limit = get_settings().job_time_limit_seconds
        detail = f"the job ran longer than the time limit of {limit} s (JOB_TIME_LIMIT_SECONDS)"
        problem = Problem(type="/problems/time-limit", title="Time limit exceeded", status=504, detail=detail)
    except Exception:
        log.exception("attempt %d crashed", attempt.number)
        detail = f"the worker failed unexpectedly while running job {job_id}; its log has the details"
        problem = Problem(type="/problems/internal-error", title="Internal error", status=500, detail=detail)
    else:
        try:
            recorder.flush()  # the last losses, before the result that they lead to
        except ProgressNotRecorded as error:
            problem = store_problem(
                error, f"could not record the training's last losses (from epoch {error.first_epoch})"
            )
        else:
            status = _patiently(lambda: store.succeed(attempt, result, time.monotonic() - started))
            log.info("attempt %d ended: %s", attempt.number, status or "superseded by a later attempt")
            return
    log.info("attempt %d failed: %s", attempt.number, problem.detail)
    with contextlib.suppress(ProgressNotRecorded):  # the failure itself says so
        recorder.flush()  # the epochs that ran before the failure
    _patiently(lambda: store.fail(job_id, attempt, problem, time.monotonic() - started))


def store_problem(error: ProgressNotRecorded, what: str) -> Problem:
    """The error of a job that Redis would not let record its progress: full, most likely."""
    if out_of_memory(error.error):
        detail = (
            f"Redis, the job store, is full (maxmemory): the job {what} and was stopped; "
            "submit it again once the operators have made room"
        )
        return Problem(type="/problems/store-full", title="Job store full", status=507, detail=detail)
    detail = f"Redis, the job store, refused a write: the job {what} and was stopped; submit it again later"
    return Problem(type="/problems/store-refused", title="Job store refused", status=503, detail=detail)


def _patiently(write: Callable[[], str | None]) -> str | None:
    """Record a job's end, retrying for a while an error reply of a full Redis; then let run_job hand it back."""
    deadline = time.monotonic() + FINISH_PATIENCE_SECONDS
    pause = 0.1
    while True:
        try:
            return write()
        except RedisUnavailable:
            raise
        except RedisError as error:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("could not record the job's end (%s); trying again in %.1f s", error, pause)
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
