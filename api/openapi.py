"""The OpenAPI 3.1 document, generated from the pydantic models that validate requests (one source of truth).

pydantic writes JSON Schema 2020-12, which is OpenAPI 3.1's dialect; this
module only lays the routes, parameters, headers and responses around it.
"""

from pydantic.json_schema import models_json_schema

from api import parameters, problems, uploads
from api.events import EVENT_ID
from api.npy import MEDIA_TYPE as NPY
from shared.jobstore import FLUSH_SECONDS
from shared.request_models import CorrelationRequest, KernelTrainingRequest
from shared.response_models import Job, JobList, LossPage, Problem
from shared.settings import Settings

PROBLEM = "application/problem+json"
_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict:
    return {"$ref": _REF.format(model=name)}


def _json(name: str, description: str, headers: dict | None = None, media: str = "application/json") -> dict:
    response = {"description": description, "content": {media: {"schema": _ref(name)}}}
    if headers:
        response["headers"] = headers
    return response


def _problems(*statuses: int) -> dict:
    reasons = {
        400: "Malformed JSON or an invalid parameter",
        401: "Missing or wrong API key",
        404: "No such job (unknown, expired, or another key's)",
        409: "The job has no such result yet: it has not succeeded",
        413: "Body over MAX_BODY_BYTES, or an image over MAX_MATRIX_ELEMENTS pixels",
        414: f"URL over {problems.MAX_URL_LENGTH} characters",
        415: "Body is not application/json (nor multipart/form-data)",
        422: "Invalid request; `errors` point at each fault",
        429: "Too many submissions or open streams for this key, or the queue is full",
        503: "Redis or the queue is unreachable, or this server process holds all the streams it may",
        507: "Redis is full (maxmemory): nothing new can be stored until room is made",
    }
    return {
        str(status): _json(
            "Problem", reasons[status], _RETRY_AFTER if status in (429, 503, 507) else None, media=PROBLEM
        )
        for status in statuses
    }


def _header(description: str, pattern: str | None = None) -> dict:
    schema = {"type": "string"} | ({"pattern": pattern} if pattern else {})
    return {"description": description, "schema": schema}


_RETRY_AFTER = {"Retry-After": _header("seconds to wait before asking again", r"^\d+$")}
_JOB_HEADERS = {
    "Location": _header("the job's URL"),
    "Retry-After": _header("present while the job is unfinished: seconds before polling again", r"^\d+$"),
    "Preference-Applied": _header("wait=N when a Prefer: wait=N was honoured"),
    "Idempotent-Replayed": _header("true when an Idempotency-Key matched an earlier submission"),
}
# One event of the stream; `data` is JSON: {epoch, epochs, loss} for progress, the Job for status.
_SSE_EVENT = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "pattern": r"^\d+-\d+$"},
        "event": {"type": "string", "enum": ["progress", "status"]},
        "data": {"type": "string"},
    },
    "required": ["id", "event", "data"],
}
_ROWS = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
_KERNELS = {
    "type": "object",
    "properties": {
        "kernels": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "label": {"type": "string"}, "matrix": _ROWS},
                "required": ["name", "label", "matrix"],
            },
        }
    },
    "required": ["kernels"],
}
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}


def _header_parameter(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "header", "required": False, "schema": schema, "description": description}


# A file is `format: binary` (what client generators read as a file; 3.1 would also allow an empty schema).
_IMAGE = {"image/png": {"schema": {"type": "string", "format": "binary"}}}
_TEXT = {"schema": {"type": "string"}}


def _picture(summary: str, content: dict, statuses: tuple[int, ...], parameters: list | None = None) -> dict:
    operation = {
        "summary": summary,
        "responses": {"200": {"description": "The picture", "content": content}, **_problems(*statuses)},
    }
    return operation | ({"parameters": parameters} if parameters else {})


def _npy(summary: str) -> dict:
    content = {NPY: {"schema": {"type": "string", "format": "binary"}}}
    return {
        "summary": summary,
        "responses": {"200": {"description": "The array", "content": content}, **_problems(401, 404, 409, 414, 503)},
    }


def _loss_chart(name: str, content: dict) -> dict:
    statuses = (400, 401, 404, 414, 503)
    return _picture(f"The loss curve so far, as {name}", content, statuses, [parameters.SCALE.document()])


_JOB_OR_NPY = {"application/json": {"schema": _ref("Job")}, NPY: {"schema": {"type": "string", "format": "binary"}}}


def _submission(model: type[CorrelationRequest | KernelTrainingRequest], summary: str) -> dict:
    body = {
        "application/json": {"schema": _ref(model.__name__)},
        "multipart/form-data": {"schema": uploads.form_schema(model), "encoding": uploads.form_encoding(model)},
    }
    return {
        "summary": summary,
        "parameters": [
            _header_parameter(
                "Idempotency-Key",
                {"type": "string", "pattern": f"^{parameters.IDEMPOTENCY_KEY.pattern}$"},
                "a retry with the same key and body returns the same job; another body is 422",
            ),
            _header_parameter(
                "Prefer",
                {"type": "string"},
                "wait=N (RFC 7240): answer 200 with the finished job if it finishes within N s (capped)",
            ),
        ],
        "requestBody": {"required": True, "content": body},
        "responses": {
            "202": _json("Job", "Accepted: the job is queued", _JOB_HEADERS),
            "200": _json(
                "Job",
                "The job finished within Prefer: wait, or an idempotent replay of a finished job; with "
                "Accept: application/x-npy, a succeeded job's output or kernel as .npy",
                _JOB_HEADERS,
            )
            | {"content": _JOB_OR_NPY},
            **_problems(400, 401, 413, 414, 415, 422, 429, 503, 507),
        },
    }


def build(settings: Settings) -> dict:
    """The whole document for an API with these settings (security appears only when API keys are on)."""
    _, schemas = models_json_schema(
        [
            (CorrelationRequest, "validation"),
            (KernelTrainingRequest, "validation"),
            (Job, "serialization"),
            (JobList, "serialization"),
            (LossPage, "serialization"),
            (Problem, "serialization"),
        ],
        ref_template=_REF,
    )
    job = {"parameters": [_JOB_ID]}
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "convq",
            "version": "1",
            "description": "2-D cross-correlation and kernel learning as a service. Errors: RFC 9457 problem+json.",
        },
        "paths": {
            "/v1/correlations": {
                "post": _submission(
                    CorrelationRequest, "Cross-correlate an input (a matrix, an .npy file, or an image) with a kernel"
                )
            },
            "/v1/kernel-trainings": {"post": _submission(KernelTrainingRequest, "Learn a kernel by gradient descent")},
            "/v1/jobs": {
                "get": {
                    "summary": "The caller's jobs, newest first, without results",
                    "parameters": [
                        query.document()
                        for query in (parameters.STATUS, parameters.KIND, parameters.PAGE_LIMIT, parameters.CURSOR)
                    ],
                    "responses": {"200": _json("JobList", "A page of jobs"), **_problems(400, 401, 414, 503)},
                }
            },
            "/v1/jobs/{job_id}": job
            | {
                "get": {
                    "summary": "A job: status, progress, result or error; with Accept: application/x-npy, "
                    "a succeeded job's output or kernel as .npy (409 before)",
                    "responses": {
                        "200": _json("Job", "The job", _JOB_HEADERS) | {"content": _JOB_OR_NPY},
                        **_problems(401, 404, 409, 414, 503),
                    },
                },
                "delete": {
                    "summary": "Cancel: a queued job never runs; a running training stops within an epoch "
                    f"(or {FLUSH_SECONDS:g} s)",
                    "responses": {
                        "200": _json("Job", "Cancelled, or already finished (unchanged)", _JOB_HEADERS),
                        "202": _json(
                            "Job",
                            f"Running: it will stop within one epoch or {FLUSH_SECONDS:g} s, whichever is longer",
                            _JOB_HEADERS,
                        ),
                        **_problems(401, 404, 414, 503, 507),
                    },
                },
            },
            "/v1/jobs/{job_id}/loss": job
            | {
                "get": {
                    "summary": "The losses of the epochs after `since`",
                    "parameters": [parameters.SINCE.document()],
                    "responses": {
                        "200": _json("LossPage", "Losses", _RETRY_AFTER),
                        **_problems(400, 401, 404, 414, 503),
                    },
                }
            },
            "/v1/jobs/{job_id}/loss.svg": job | {"get": _loss_chart("SVG", {"image/svg+xml": _TEXT})},
            "/v1/jobs/{job_id}/loss.png": job | {"get": _loss_chart("PNG", _IMAGE)},
            "/v1/jobs/{job_id}/output.png": job
            | {
                "get": _picture(
                    "A succeeded correlation's output: grey if unsigned, blue-white-red if signed",
                    _IMAGE,
                    (401, 404, 409, 414, 503),
                )
            },
            "/v1/jobs/{job_id}/output.npy": job
            | {"get": _npy("A succeeded correlation's output as an .npy file (float32, C order)")},
            "/v1/jobs/{job_id}/kernel.npy": job
            | {"get": _npy("A succeeded training's learned kernel as an .npy file (float32, C order)")},
            "/v1/kernels": {
                "get": {
                    "summary": "Named kernels: the seed's edge detector, Sobel, Laplacian, box blur",
                    "responses": {
                        "200": {"description": "The presets", "content": {"application/json": {"schema": _KERNELS}}},
                        **_problems(401, 414),
                    },
                }
            },
            "/v1/jobs/{job_id}/events": job
            | {
                "get": {
                    "summary": "Server-Sent Events: `progress` per epoch, then one `status` event with the job",
                    "parameters": [
                        _header_parameter(
                            "Last-Event-ID",
                            {"type": "string", "pattern": f"^{EVENT_ID.pattern}$"},
                            "resume after this event",
                        )
                    ],
                    "responses": {
                        "200": {
                            "description": "An event stream",
                            "content": {"text/event-stream": {"schema": _SSE_EVENT}},
                        },
                        **_problems(400, 401, 404, 414, 429, 503),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The process is alive",
                    "responses": {"200": {"description": "Alive"}, **_problems(414)},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Redis answers and at least one worker answers a ping",
                    "responses": {"200": {"description": "Ready"}, **_problems(414, 503)},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                        **_problems(414),
                    },
                }
            },
        },
        "components": {"schemas": schemas["$defs"]},
    }
    if settings.api_keys:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, operations in document["paths"].items():
            if path.startswith("/v1"):
                for operation in operations.values():
                    if isinstance(operation, dict):
                        operation["security"] = [{"bearer": []}]
    return document
