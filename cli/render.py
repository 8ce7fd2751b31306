"""What the CLI shows: rich tables and a training's live progress bar for people, plain JSON for scripts."""

import json
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import datetime

import numpy as np
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from client import CorrelationResult, Event, Job, Problem, ProgressEvent, StatusEvent

# soft_wrap: a line longer than the terminal (a job id, a path) is not broken into two; piped, tables are not
# squeezed into 80 columns either.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)
MAX_SHOWN = 12  # rows and columns of a matrix, and matrices of an array with channels
UPDATE_SECONDS = 0.1


def to_json(value: Job | list[Job]) -> str:
    """The job as the API returned it (a list: each job as returned), in the API's compact form."""
    returned = [job.raw for job in value] if isinstance(value, list) else value.raw
    return json.dumps(returned, separators=(",", ":"), ensure_ascii=False)


def show_array(title: str, array: np.ndarray) -> None:
    """A matrix as one table; an array with channels as one table per channel (the first MAX_SHOWN of them)."""
    if array.ndim == 2:
        show_matrix(title, array)
        return
    channels = list(np.ndindex(array.shape[:-2]))
    cropped = "" if len(channels) <= MAX_SHOWN else f" (the first {MAX_SHOWN} of its {len(channels)}; --json for all)"
    shape = " x ".join(map(str, array.shape))
    out.print(f"{title}, {shape}, channel by channel{cropped}:")
    for index in channels[:MAX_SHOWN]:
        show_matrix(f"{title}: {_channel(index, array.shape)}", array[index])


def _channel(index: tuple[int, ...], shape: tuple[int, ...]) -> str:
    """Which matrix of an O x oh x ow output, a C x kh x kw or an O x C x kh x kw kernel: "channel 1 of 3"."""
    if len(index) == 1:
        return f"channel {index[0]} of {shape[0]}"
    return f"output channel {index[0]} of {shape[0]}, input channel {index[1]} of {shape[1]}"


def show_matrix(title: str, matrix: np.ndarray) -> None:
    """The matrix as a table: at most its top-left MAX_SHOWN x MAX_SHOWN (--json gives all of it)."""
    rows, columns = matrix.shape
    cropped = "" if max(rows, columns) <= MAX_SHOWN else f" (its top-left {MAX_SHOWN} x {MAX_SHOWN}; --json for all)"
    out.print(f"{title}, {rows} x {columns}{cropped}:")
    table = Table(show_header=False)
    for _ in range(min(columns, MAX_SHOWN)):
        table.add_column(justify="right")
    for row in matrix[:MAX_SHOWN, :MAX_SHOWN]:
        table.add_row(*(f"{element:.6g}" for element in row))
    out.print(table)


def show_job(job: Job) -> None:
    """The job's fields, then its result or error."""
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    rows = {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "attempts": str(job.attempts),
        "created": _time(job.created_at),
        "started": _time(job.started_at),
        "finished": _time(job.finished_at),
        "expires": _time(job.expires_at),
        "queue": job.queue,
        "device": job.device,
        "progress": _progress(job),
        "error": f"{job.error.title}: {job.error.detail}" if job.error else "",
    }
    for name, value in rows.items():
        if value:
            table.add_row(name, value)
    out.print(table)
    show_result(job)


def show_result(job: Job) -> None:
    """The result of a succeeded job (nothing for others)."""
    result = job.result
    if isinstance(result, CorrelationResult):
        show_array("output", result.output)
    elif result is not None:
        show_array("learned kernel", result.kernel)
        converged = ", converged (below the tolerance)" if result.converged else ""
        bias = "" if result.bias is None else f", bias {_numbers(result.bias)}"
        out.print(f"loss {result.loss:.6g} after {result.epochs_run} epochs{converged}{bias}", markup=False)


def _numbers(value: float | list[float]) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f"{number:.6g}" for number in value) + "]"
    return f"{value:.6g}"


def show_problem(problem: Problem, prefix: str = "error") -> None:
    """A problem on stderr: its title and detail, then each fault as `loc: msg`."""
    err.print(f"{prefix}: {problem.title} ({problem.status}): {problem.detail}", markup=False)
    for fault in problem.errors:
        err.print(f"  {fault.loc or '/'}: {fault.msg}", markup=False)


def jobs_table(jobs: Iterable[Job]) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("id", no_wrap=True, min_width=36)  # whole, to copy into show and cancel
    for name in ("kind", "status", "created", "queue", "device", "progress"):
        table.add_column(name, no_wrap=True)
    table.add_column("error")
    for job in jobs:
        when, error = _time(job.created_at), job.error.title if job.error else ""
        table.add_row(job.id, job.kind, job.status, when, job.queue, job.device or "", _progress(job), error)
    return table


def follow_with_bar(events: Iterator[Event]) -> Job:
    """Show a training's progress from its event stream until its status event; return the finished job.

    Epochs arrive in bursts (the worker records them every FLUSH_SECONDS, shared.jobstore) and rich estimates
    the rate from its last 1,000 updates, so the bar is updated at most every UPDATE_SECONDS, and at the end.
    """
    columns = (BarColumn(), MofNCompleteColumn(), LossColumn(), RateColumn(), TimeRemainingColumn())
    with Progress("epoch", *columns, console=out) as progress:
        task = progress.add_task("training", total=None, loss=None)
        latest, shown_at = None, float("-inf")
        for event in events:
            if isinstance(event, ProgressEvent):
                latest = event
                if time.monotonic() - shown_at < UPDATE_SECONDS:
                    continue
            if latest is not None:
                progress.update(task, completed=latest.epoch, total=latest.epochs, loss=latest.loss)
                shown_at = time.monotonic()
            if isinstance(event, StatusEvent):
                return event.job
    raise AssertionError("an event stream ends with its status event")


class LossColumn(ProgressColumn):
    """The loss of the latest epoch."""

    def render(self, task: Task) -> Text:
        loss = task.fields.get("loss")
        return Text("loss " + ("-" if loss is None else f"{loss:.4g}"))


class RateColumn(ProgressColumn):
    """Epochs per second, over the last few seconds."""

    def render(self, task: Task) -> Text:
        return Text("- epochs/s" if task.speed is None else f"{task.speed:,.0f} epochs/s")


def _progress(job: Job) -> str:
    return f"{job.progress.epoch}/{job.progress.epochs}" if job.progress else ""


def _time(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else ""
