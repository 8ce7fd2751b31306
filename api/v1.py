"""HTTP API v1: submit correlations and kernel trainings; list, read, follow and cancel jobs."""

import logging
import re
import uuid
from typing import TypeVar

import orjson
from flask import Blueprint, Response, g, request, stream_with_context, url_for

from api import access, events, holds, parameters
from api.body import parse_body
from api.kernels import KERNELS
from api.npy import MEDIA_TYPE as NPY
from api.npy import to_bytes as npy_bytes
from api.problems import ProblemError, QueueUnavailable, invalid
from api.responses import json_response
from api.runtime import runtime
from api.uploads import parse_array_form, parse_correlation_form
from shared import logs
from shared.jobstore import IdempotencyConflict
from shared.packing import pack_request, result_array
from shared.request_models import CorrelationRequest, KernelTrainingRequest
from shared.response_models import FINISHED, JobKind, Problem
from shared.taskqueue import TASK_FOR_KIND, QueueFull, Route, route

log = logging.getLogger(__name__)

bp = Blueprint("v1", __name__, url_prefix="/v1")
bp.before_request(access.authenticate)

Found = TypeVar("Found")

# How soon a client polling an unfinished job should ask again.
POLL_AFTER_SECONDS = 1
RETRY_WHEN_FULL_SECONDS = 5
PREFER_WAIT = re.compile(r"(?:^|[,;])\s*wait\s*=\s*(\d{1,6})\s*(?=$|[,;])", re.IGNORECASE)
MULTIPART = "multipart/form-data (an image, or .npy files)"


@bp.post("/correlations")
def submit_correlation() -> Response:
    """A JSON body, or a multipart form with an image or .npy files as the arrays (api/uploads.py)."""
    if request.mimetype == "multipart/form-data":
        return _submit("correlation", parse_correlation_form(runtime().limits))
    return _submit("correlation", parse_body(CorrelationRequest, runtime().limits, alternative=MULTIPART))


@bp.post("/kernel-trainings")
def submit_kernel_training() -> Response:
    """A JSON body, or a multipart form with .npy files as the arrays and an .npz as the pairs (api/uploads.py)."""
    if request.mimetype == "multipart/form-data":
        training = parse_array_form(KernelTrainingRequest, runtime().limits)
    else:
        training = parse_body(KernelTrainingRequest, runtime().limits, alternative="multipart/form-data")
    return _submit("kernel_training", training, epochs=training.epochs)


@bp.get("/kernels")
def list_kernels() -> Response:
    """The named kernels the web page and the CLI offer (the seed's edge detector, Sobel, Laplacian, box blur)."""
    return json_response({"kernels": [{"name": name, **kernel._asdict()} for name, kernel in KERNELS.items()]})


@bp.get("/jobs")
def list_jobs() -> Response:
    """The caller's jobs, newest first, without their results; ?status=&kind=&limit=&cursor= ."""
    status, kind = parameters.STATUS.read(), parameters.KIND.read()
    limit, cursor = parameters.PAGE_LIMIT.read(), parameters.CURSOR.read()
    jobs, next_cursor = runtime().store.jobs(g.caller, status=status, kind=kind, limit=limit, before=cursor)
    return json_response({"jobs": jobs, "next_cursor": str(next_cursor) if next_cursor is not None else None})


@bp.get("/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    """The job as JSON; with `Accept: application/x-npy` (preferred to JSON), its array as output.npy or kernel.npy."""
    if _wants_npy():
        kind = _existing(job_id, runtime().store.get(_parse_id(job_id), g.caller, with_result=False))["kind"]
        return get_output_npy(job_id) if kind == "correlation" else get_kernel_npy(job_id)
    return _job_response(_existing(job_id, runtime().store.get(_parse_id(job_id), g.caller)))


@bp.get("/jobs/<job_id>/loss")
def get_loss(job_id: str) -> Response:
    since = parameters.SINCE.read()
    page = _loss_page(job_id, since)
    return json_response(page, headers=_retry_unless_finished(page["status"]))


@bp.get("/jobs/<job_id>/loss.<any(svg, png):image_format>")
def get_loss_chart(job_id: str, image_format: str) -> Response:
    """The loss curve so far, drawn; ?scale=log for a log scale."""
    scale = parameters.SCALE.read()
    page = _loss_page(job_id, 0)
    from api import pictures  # matplotlib: imported only by processes that draw

    chart = pictures.loss_chart(page["losses"], scale == "log", image_format)
    mimetype = "image/svg+xml" if image_format == "svg" else "image/png"
    return Response(chart, mimetype=mimetype, headers=_retry_unless_finished(page["status"]))


@bp.get("/jobs/<job_id>/output.png")
def get_output_image(job_id: str) -> Response:
    """A finished correlation's output as an image: grey for unsigned outputs, a blue-white-red map for signed ones."""
    store, parsed = runtime().store, _parse_id(job_id)
    job = _existing(job_id, store.get(parsed, g.caller, with_result=False))
    if job["kind"] != "correlation":
        raise _not_found(job_id, "is a kernel training: only correlations have an output image")
    if job["status"] != "succeeded":
        detail = f"job {job_id!r} is {job['status']}: only a succeeded correlation has an output image"
        problem = Problem(type="/problems/no-output", title="Conflict", status=409, detail=detail)
        raise ProblemError(problem, _retry_unless_finished(job["status"]))
    from api import pictures  # matplotlib: imported only by processes that draw

    output = result_array(_existing_result(job_id, store.result(parsed)), "output", (2, 3))
    request = orjson.loads(_existing(job_id, store.request_json(parsed)))  # the arrays' shapes, not their data
    input_shape, kernel_shape = (tuple(request[name]["shape"][-2:]) for name in ("input", "kernel"))
    window = pictures.unpadded(input_shape, kernel_shape, tuple(request["padding"]), tuple(request["stride"]))
    return Response(pictures.output_png(output, window), mimetype="image/png")


@bp.get("/jobs/<job_id>/output.npy")
def get_output_npy(job_id: str) -> Response:
    """A succeeded correlation's output as an .npy file (float32)."""
    return _result_npy(job_id, "correlation")


@bp.get("/jobs/<job_id>/kernel.npy")
def get_kernel_npy(job_id: str) -> Response:
    """A succeeded training's learned kernel as an .npy file (float32)."""
    return _result_npy(job_id, "kernel_training")


# The array each kind of job answers as .npy: its result's field, and the dimensions that field may have.
NPY_ARRAYS: dict[JobKind, tuple[str, tuple[int, ...]]] = {
    "correlation": ("output", (2, 3)),
    "kernel_training": ("kernel", (2, 3, 4)),
}


def _result_npy(job_id: str, kind: JobKind) -> Response:
    job = _existing(job_id, runtime().store.get(_parse_id(job_id), g.caller, with_result=False))
    return _npy_response(job, kind)


def _npy_response(job: dict, kind: JobKind) -> Response:
    """The array of a job of `kind` as an .npy file, or why not (404 for another kind of job, 409 unless succeeded)."""
    job_id, (field, dimensions) = job["id"], NPY_ARRAYS[kind]
    if job["kind"] != kind:
        other = "a correlation" if job["kind"] == "correlation" else "a kernel training"
        raise _not_found(job_id, f"is {other}: it has no {field}.npy")
    if job["status"] != "succeeded":
        detail = f"job {job_id!r} is {job['status']}: only a succeeded job has its {field}.npy"
        problem = Problem(type="/problems/no-output", title="Conflict", status=409, detail=detail)
        raise ProblemError(problem, _retry_unless_finished(job["status"]))
    array = result_array(_existing_result(job_id, runtime().store.result(job_id)), field, dimensions)
    disposition = f'attachment; filename="{job_id}-{field}.npy"'
    return Response(npy_bytes(array), mimetype=NPY, headers={"Content-Disposition": disposition})


@bp.get("/jobs/<job_id>/events")
def job_events(job_id: str) -> Response:
    """Server-Sent Events: progress per epoch, then the finished job; resumable with Last-Event-ID."""
    rt = runtime()
    job = _existing(job_id, rt.store.get(_parse_id(job_id), g.caller, with_result=False))
    after = request.headers.get("Last-Event-ID", "0-0")
    if not events.EVENT_ID.fullmatch(after):
        raise parameters.bad_parameter(
            "/Last-Event-ID", f"Last-Event-ID must be an event id such as 12-0, not {after!r}"
        )
    body = events.stream(rt.store, job, g.caller, after, rt.settings.max_stream_seconds)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    caller = access.caller_key()
    holds.hold_or_refuse(caller, "event streams")
    response = Response(stream_with_context(body), mimetype="text/event-stream", headers=headers)
    return holds.release_on_close(response, caller)


@bp.delete("/jobs/<job_id>")
def cancel_job(job_id: str) -> Response:
    """Cancel: a queued job never runs, a running one stops within an epoch (or FLUSH_SECONDS), a finished one stays."""
    store = runtime().store
    parsed = _parse_id(job_id)
    _existing(job_id, store.cancel(parsed, g.caller))
    job = _existing(job_id, store.get(parsed, g.caller))
    return _job_response(job, status=202 if job["status"] == "running" else 200)


def _submit(
    kind: JobKind, job_request: CorrelationRequest | KernelTrainingRequest, epochs: int | None = None
) -> Response:
    """Store the job and its request, queue a message that carries only the job id, and maybe wait for it."""
    rt = runtime()
    key, wait = parameters.idempotency_key(), _preferred_wait(rt.settings.max_wait_seconds)
    packed = pack_request(job_request)
    route = _route(job_request)
    try:
        job, created = rt.store.create(kind, packed, g.caller, epochs, logs.request_id.get(), key, route)
    except QueueFull:
        detail = f"the queue holds {rt.settings.max_queue_length} jobs or more (MAX_QUEUE_LENGTH); retry later"
        problem = Problem(type="/problems/queue-full", title="Too Many Requests", status=429, detail=detail)
        raise ProblemError(problem, {"Retry-After": str(RETRY_WHEN_FULL_SECONDS)}) from None
    except IdempotencyConflict as conflict:
        detail = f"Idempotency-Key {key!r} was used for a different request (job {conflict}); use a new key"
        raise invalid(
            422, detail, [{"loc": "/Idempotency-Key", "msg": detail, "type": "idempotency_key_reused"}]
        ) from None
    if created:
        _enqueue(kind, job["id"], route.queue)
    headers = {"Location": url_for("v1.get_job", job_id=job["id"])}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    if wait is not None and holds.try_hold(caller := access.caller_key()):
        try:
            headers["Preference-Applied"] = f"wait={wait}"
            if rt.store.wait_until_finished(job["id"], wait, fresh=created):
                job = rt.store.get(job["id"], g.caller, with_result=not _wants_npy())
        finally:
            holds.give_back(caller)
    if job["status"] == "succeeded" and _wants_npy():  # the array itself: one round trip, no JSON of it
        response = _npy_response(job, kind)  # the job just read: not read again
        response.headers.update(headers)
        return response
    return _job_response(job, status=200 if job["status"] in FINISHED else 202, headers=headers)


def _wants_npy() -> bool:
    """Whether the client prefers an .npy file to JSON (`Accept: application/x-npy`)."""
    return request.accept_mimetypes.best_match(["application/json", NPY]) == NPY


def _route(job_request: CorrelationRequest | KernelTrainingRequest) -> Route:
    """The queue of the workers the job asks for, or that its size calls for; 422 for GPUs this server lacks."""
    settings = runtime().settings
    if job_request.device == "gpu" and not settings.gpu_queue:
        detail = "this server has no GPU workers (GPU_QUEUE is off): use device auto or cpu"
        raise invalid(422, detail, [{"loc": "/device", "msg": detail, "type": "no_gpu_queue"}])
    return route(settings, job_request.device, job_request.work)


def _enqueue(kind: JobKind, job_id: str, queue: str) -> None:
    """Send the job's message; if that fails in any way, forget the job (the error handler answers 503 or 507).

    kombu reports a refused or lost message in many ways (OperationalError, Redis's own errors, even an
    AttributeError from a channel that an earlier error closed): whatever it raises, the job must not stay
    queued without a message, nor be handed to a retry with its Idempotency-Key. Should the discard fail too
    (Redis gone meanwhile), the job is found by the workers' reconciler and sent again (worker.reconciler).
    """
    try:
        runtime().queue.send_task(TASK_FOR_KIND[kind], args=[job_id], queue=queue)
    except Exception as error:
        store = runtime().store
        try:
            store.discard(job_id, g.caller)
            full = store.memory().full  # kombu's error may not say (an AttributeError from a closed channel)
        except Exception as discard_error:  # the reconciler takes over
            log.warning("could not discard job %s after its message failed: %r", job_id, discard_error)
            full = False
        detail = f"the message of job {job_id} could not be sent: {error!r}"
        raise QueueUnavailable(detail, redis_full=full) from error


def _preferred_wait(cap: int) -> int | None:
    """The N of `Prefer: wait=N` (RFC 7240), capped by MAX_WAIT_SECONDS; None when not asked."""
    match = PREFER_WAIT.search(request.headers.get("Prefer", ""))
    return min(int(match.group(1)), cap) if match else None


def _loss_page(job_id: str, since: int) -> dict:
    page = _existing(job_id, runtime().store.losses(_parse_id(job_id), since, g.caller))
    if page.pop("kind") != "kernel_training":
        raise _not_found(job_id, "is a correlation: only kernel trainings have a loss history")
    return page


def _job_response(job: dict, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return json_response(job, status, (headers or {}) | _retry_unless_finished(job["status"]))


def _retry_unless_finished(status: str) -> dict[str, str]:
    """Retry-After for an unfinished job, telling a poller when to ask again."""
    return {} if status in FINISHED else {"Retry-After": str(POLL_AFTER_SECONDS)}


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


def _existing_result(job_id: str, found: bytes | None) -> bytes:
    """A succeeded job's stored result, or 404 once it expired (RESULT_TTL_SECONDS may be shorter than the job's)."""
    if found is None:
        raise _not_found(job_id, "has no result any more: results are kept RESULT_TTL_SECONDS after the job ends")
    return found


def _not_found(job_id: str, why: str = "does not exist or has expired") -> ProblemError:
    return ProblemError(Problem(title="Not Found", status=404, detail=f"job {job_id!r} {why}"))
