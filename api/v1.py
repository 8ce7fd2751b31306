"""HTTP API v1: submit correlations and kernel trainings, read, follow and cancel jobs."""

import logging
import uuid
from typing import TypeVar

from flask import Blueprint, Response, request, url_for
from kombu.exceptions import OperationalError
from pydantic import BaseModel

from api.body import parse_body
from api.problems import RETRY_UNAVAILABLE_SECONDS, ProblemError
from api.responses import json_response
from api.runtime import runtime
from shared import logs
from shared.schemas import FINISHED, CorrelationRequest, JobKind, KernelTrainingRequest, Problem
from shared.taskqueue import TASK_FOR_KIND

log = logging.getLogger(__name__)

bp = Blueprint("v1", __name__, url_prefix="/v1")

Found = TypeVar("Found")

# How soon a client polling an unfinished job should ask again.
POLL_AFTER_SECONDS = 1


@bp.post("/correlations")
def submit_correlation() -> Response:
    return _submit("correlation", parse_body(CorrelationRequest, runtime().limits))


@bp.post("/kernel-trainings")
def submit_kernel_training() -> Response:
    training = parse_body(KernelTrainingRequest, runtime().limits)
    return _submit("kernel_training", training, epochs=training.epochs)


@bp.get("/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    job = _existing(job_id, runtime().store.get(_parse_id(job_id)))
    return _job_response(job)


@bp.get("/jobs/<job_id>/loss")
def get_loss(job_id: str) -> Response:
    since = request.args.get("since", "0")
    if not since.isdigit() or len(since) > 9:
        detail = f"since must be a whole number of epochs (0 or more), not {since!r}"
        error = {"loc": "/since", "msg": detail, "type": "query_parameter"}
        raise ProblemError(
            Problem(
                type="/problems/invalid-request", title="Invalid request", status=400, detail=detail, errors=[error]
            )
        )
    page = _existing(job_id, runtime().store.losses(_parse_id(job_id), int(since)))
    if page.pop("kind") != "kernel_training":
        raise _not_found(job_id, "is a correlation: only kernel trainings have a loss history")
    headers = None if page["status"] in FINISHED else {"Retry-After": str(POLL_AFTER_SECONDS)}
    return json_response(page, headers=headers)


@bp.delete("/jobs/<job_id>")
def cancel_job(job_id: str) -> Response:
    """Cancel a job: a queued one never runs, a running one stops within an epoch, a finished one is unchanged."""
    store = runtime().store
    parsed = _parse_id(job_id)
    _existing(job_id, store.cancel(parsed))
    job = _existing(job_id, store.get(parsed))
    return _job_response(job, status=202 if job["status"] == "running" else 200)


def _submit(kind: JobKind, job_request: BaseModel, epochs: int | None = None) -> Response:
    """Store the job and its request, then queue a message that carries only the job id."""
    rt = runtime()
    job = rt.store.create(kind, job_request.model_dump_json().encode(), epochs, logs.request_id.get())
    try:
        rt.queue.send_task(TASK_FOR_KIND[kind], args=[job["id"]])
    except OperationalError as error:
        log.warning("could not queue job %s: %s", job["id"], error)
        rt.store.discard(job["id"], kind)
        problem = Problem(
            type="/problems/unavailable",
            title="Service Unavailable",
            status=503,
            detail="the job queue is not reachable; retry shortly",
        )
        raise ProblemError(problem, {"Retry-After": str(RETRY_UNAVAILABLE_SECONDS)}) from None
    location = url_for("v1.get_job", job_id=job["id"])
    return json_response(job, 202, {"Location": location, "Retry-After": str(POLL_AFTER_SECONDS)})


def _job_response(job: dict, status: int = 200) -> Response:
    headers = None if job["status"] in FINISHED else {"Retry-After": str(POLL_AFTER_SECONDS)}
    return json_response(job, status, headers)


def _parse_id(job_id: str) -> str:
    """Job ids are UUIDs; anything else cannot name a job."""
    try:
        return str(uuid.UUID(job_id))
    except ValueError:
        raise _not_found(job_id) from None


def _existing(job_id: str, found: Found | None) -> Found:
    if found is None:
        raise _not_found(job_id)
    return found


def _not_found(job_id: str, why: str = "does not exist or has expired") -> ProblemError:
    return ProblemError(Problem(title="Not Found", status=404, detail=f"job {job_id!r} {why}"))
