"""Typed views of the API's answers: frozen dataclasses built from its JSON."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np

from client.matrices import from_wire

JobKind = Literal["correlation", "kernel_training"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Queue = Literal["cpu", "gpu"]
Device = Literal["auto", "cpu", "gpu"]  # what a request asks for; a job's `device` says where it ran (cuda:0, ...)
Optimizer = Literal["sgd", "momentum", "adam"]
Loss = Literal["sum", "mean"]
FINISHED = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class FieldError:
    """One fault in a request: `loc` is a JSON pointer to it, e.g. /input/3."""

    loc: str
    msg: str
    type: str


@dataclass(frozen=True)
class Problem:
    """An RFC 9457 problem: the body of every error answer, and the error of a failed job."""

    title: str
    status: int
    detail: str
    type: str = "about:blank"
    instance: str | None = None
    errors: tuple[FieldError, ...] = ()

    @classmethod
    def from_json(cls, data: dict) -> "Problem":
        errors = tuple(FieldError(e["loc"], e["msg"], e.get("type", "")) for e in data.get("errors") or ())
        return cls(
            title=data["title"],
            status=data["status"],
            detail=data.get("detail", ""),
            type=data.get("type", "about:blank"),
            instance=data.get("instance"),
            errors=errors,
        )


@dataclass(frozen=True)
class Progress:
    """How far a training has come: epochs done of epochs, and the loss of the latest (None before the first)."""

    epoch: int
    epochs: int
    loss: float | None


@dataclass(frozen=True)
class CorrelationResult:
    """`output` is oh x ow, or O x oh x ow for an O x C x kh x kw kernel."""

    output: np.ndarray


@dataclass(frozen=True)
class TrainingResult:
    """`kernel` has the requested kernel's shape (2-D to 4-D); `bias` is one number, one per output channel, or None.

    `converged`: a loss fell below the request's tolerance, and the training stopped there after `epochs_run`.
    """

    kernel: np.ndarray
    bias: float | list[float] | None
    loss: float
    loss_history: tuple[float, ...]
    epochs_run: int
    converged: bool


@dataclass(frozen=True)
class Job:
    """A job; `result` is set once it succeeded (never in a listing), `error` once it failed.

    `queue` is the workers it was queued for; `device` where its last attempt ran (cpu, cuda:0, ...), None before.
    """

    id: str
    kind: JobKind
    status: JobStatus
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime
    queue: Queue
    device: str | None
    progress: Progress | None
    result: CorrelationResult | TrainingResult | None
    error: Problem | None
    raw: dict = field(default_factory=dict, repr=False, compare=False)  # the API's JSON for it, as received

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @classmethod
    def from_json(cls, data: dict) -> "Job":
        return cls(
            id=data["id"],
            kind=data["kind"],
            status=data["status"],
            attempts=data["attempts"],
            created_at=datetime.fromisoformat(data["created_at"]),
            started_at=_time(data["started_at"]),
            finished_at=_time(data["finished_at"]),
            expires_at=datetime.fromisoformat(data["expires_at"]),
            queue=data["queue"],
            device=data["device"],
            progress=_progress(data["progress"]),
            result=_result(data.get("result")),
            error=Problem.from_json(data["error"]) if data["error"] else None,
            raw=data,
        )


@dataclass(frozen=True)
class LossPage:
    """GET /v1/jobs/<id>/loss?since=k: the losses of the epochs after k."""

    losses: tuple[float, ...]
    since: int
    epochs_done: int
    epochs: int
    status: JobStatus


@dataclass(frozen=True)
class NamedKernel:
    name: str
    label: str
    matrix: list[list[float]]


@dataclass(frozen=True)
class ProgressEvent:
    """A training finished an epoch; `id` resumes the event stream after it."""

    id: str
    epoch: int
    epochs: int
    loss: float


@dataclass(frozen=True)
class StatusEvent:
    """The job finished: the last event of its stream."""

    id: str
    job: Job


Event = ProgressEvent | StatusEvent


def _progress(data: dict | None) -> Progress | None:
    return Progress(data["epoch"], data["epochs"], data["loss"]) if data else None


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _result(data: dict | None) -> CorrelationResult | TrainingResult | None:
    if data is None:
        return None
    if "kernel" in data:
        return TrainingResult(
            kernel=from_wire(data["kernel"]),
            bias=data["bias"],
            loss=data["loss"],
            loss_history=tuple(data["loss_history"]),
            epochs_run=data["epochs_run"],
            converged=data["converged"],
        )
    return CorrelationResult(output=from_wire(data["output"]))
