"""One attempt at one job: start it in the job store, run it, record how it ended.

Whatever happens, the job ends with a status and, when it failed, an error a
person can act on; tracebacks stay in the worker's log. If Redis stays away
longer than the job store's patience, the job is handed back to the queue
rather than failed: Redis, not this process, decides who runs it next.
"""

import logging
import time
from collections.abc import Callable
from functools import lru_cache

import torch
from celery.exceptions import Reject, SoftTimeLimitExceeded
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services import EpochCallback, TrainingDiverged, pick_device
from shared import logs
from shared.jobstore import Attempt, AttemptsExhausted, JobStore
from shared.schemas import Problem
from shared.settings import get_settings
from worker.compute import OutputNotFinite
from worker.progress import EpochRecorder

log = logging.getLogger(__name__)

Compute = Callable[[BaseModel, torch.device, EpochCallback], bytes]
RedisUnavailable = (RedisConnectionError, RedisTimeoutError)


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
            _run(store, attempt, request_model.model_validate_json(attempt.request), compute)
        finally:
            logs.request_id.reset(request_token)
    except AttemptsExhausted as exhausted:
        log.error("job failed: %s", exhausted)
    except RedisUnavailable as error:
        log.warning("Redis unreachable (%s); handing the job back to the queue", error)
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
        recorder.flush()  # the last losses, before the result that they lead to
        status = store.succeed(attempt, result, time.monotonic() - started)
        log.info("attempt %d ended: %s", attempt.number, status or "superseded by a later attempt")
        return
    log.info("attempt %d failed: %s", attempt.number, problem.detail)
    recorder.flush()  # the epochs that ran before the failure
    store.fail(job_id, attempt, problem, time.monotonic() - started)
