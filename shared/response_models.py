"""The response models of HTTP API v1: jobs, their results and progress, pages, and problems (RFC 9457).

The job store's answers are dumps of Job and JobSummary, and the OpenAPI document
is generated from these same models (api.openapi).
"""

from typing import Literal, get_args

from pydantic import BaseModel, Field

from shared.arrays import Base64Array

JobKind = Literal["correlation", "kernel_training"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JOB_KINDS: tuple[str, ...] = get_args(JobKind)
JOB_STATUSES: tuple[str, ...] = get_args(JobStatus)
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class FieldError(BaseModel):
    loc: str = Field(description="JSON pointer to the fault in the request, e.g. /input/3")
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem: every error of the API, and the error of a failed job."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = Field(None, description="identifies this occurrence, e.g. in the server's logs")
    errors: list[FieldError] | None = None


Rows = list[list[float]]


class CorrelationResult(BaseModel):
    output: Rows | list[Rows] | Base64Array = Field(description="oh x ow, or O x oh x ow with output channels")
    shape: list[int]


class TrainingResult(BaseModel):
    kernel: Rows | list[Rows] | list[list[Rows]] | Base64Array = Field(description="in the requested kernel's shape")
    bias: float | list[float] | None = Field(description="one number, or one per output channel; null without bias")
    loss: float
    loss_history: list[float]
    epochs_run: int
    converged: bool = Field(description="the last loss is below the request's tolerance")


class Progress(BaseModel):
    epoch: int
    epochs: int
    loss: float | None


# The job store's answers are dumps of these two models (shared.jobstore.JobStore._view): the document cannot differ
# from them. (`error` and Job's `result` are kept by the store as JSON and spliced into the answer unparsed.)
class JobSummary(BaseModel):
    """A job in a list: everything but its result."""

    id: str
    kind: JobKind
    status: JobStatus
    attempts: int = Field(description="how many times a worker has started the job (more than 1 after a redelivery)")
    created_at: str
    started_at: str | None
    finished_at: str | None
    expires_at: str = Field(description="when the job, its result and loss history will be forgotten")
    queue: Literal["cpu", "gpu"] = Field(description="the workers it was queued for")
    device: str | None = Field(description="where its last attempt ran: cpu, cuda:0, ...; null before it starts")
    progress: Progress | None
    error: Problem | None


class Job(JobSummary):
    """GET /v1/jobs/<id>: one job, as the job store holds it."""

    result: CorrelationResult | TrainingResult | None


class JobList(BaseModel):
    """GET /v1/jobs: the caller's jobs, newest first."""

    jobs: list[JobSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class LossPage(BaseModel):
    """GET /v1/jobs/<id>/loss?since=k: the losses of the epochs after k."""

    losses: list[float]
    since: int
    epochs_done: int
    epochs: int
    status: JobStatus
