"""A typed client of convq's HTTP API v1, on httpx: one method per route."""

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypedDict, Unpack

import httpx
import numpy as np

from client.errors import ApiError, ServerUnreachable, StreamEnded, WaitTimeout
from client.events import Retry, parse
from client.matrices import NPY_MIN_ELEMENTS, MatrixLike, npy_bytes, npz_bytes, read_npy, to_wire
from client.models import (
    Device,
    Event,
    Job,
    Loss,
    LossPage,
    NamedKernel,
    Optimizer,
    Problem,
    ProgressEvent,
    StatusEvent,
)

Pair = int | tuple[int, int] | list[int]
Numbers = float | Sequence[float] | np.ndarray  # one number, or one per output channel
TrainingPair = tuple[MatrixLike, MatrixLike | None] | dict[str, MatrixLike]

# The server sends a comment on a quiet event stream every KEEPALIVE_SECONDS (api/events.py, checked below this by
# tests/test_agreement.py); a read that waits longer means it is gone.
STREAM_READ_TIMEOUT = 60.0
MAX_PAGE = 100


class CorrelationOptions(TypedDict, total=False):
    """A correlation's options, for an input matrix and an image alike; left out or None: the server's default."""

    padding: Pair | None  # zero padding: one integer or (ph, pw)
    stride: Pair | None  # one integer or (sh, sw)
    bias: Numbers | None  # one number, or one per output channel of an O x C x kh x kw kernel
    device: Device | None
    result_format: str | None  # "lists" or "base64"


class Client:
    """convq's API at `base_url`; `api_key` is sent as a bearer token. Use as a context manager, or close()."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30.0):
        headers = {"User-Agent": "convq-client/0.1"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def correlate(
        self,
        input: MatrixLike,
        kernel: MatrixLike,
        *,
        wait: int | None = None,
        **options: Unpack[CorrelationOptions],
    ) -> Job:
        """Submit a cross-correlation; with `wait`, the server holds the answer up to that many seconds for the end.

        `input` is H x W or C x H x W; `kernel` kh x kw, C x kh x kw (one output) or O x C x kh x kw (O outputs,
        with one `bias` each if it is a list). `options`: see CorrelationOptions.
        """
        body = {"input": input, "kernel": kernel} | _correlation_options(options)
        return self._submit("/v1/correlations", body, wait)

    def correlate_image(
        self,
        image: str | Path | bytes,
        kernel: MatrixLike | str,
        *,
        wait: int | None = None,
        **options: Unpack[CorrelationOptions],
    ) -> Job:
        """Correlate a PNG or JPEG image (a path, or its bytes) as a grayscale matrix in [0, 1] with `kernel`.

        `kernel` may be a matrix or the name of one of kernels(); output_png() draws the output.
        `options`: see CorrelationOptions.
        """
        name, content = ("image", image) if isinstance(image, bytes) else (Path(image).name, Path(image).read_bytes())
        fields = {"kernel": to_wire(kernel)} | _correlation_options(options)
        form = {key: _form_value(key, value) for key, value in fields.items()}
        files = {"image": (name, content, "application/octet-stream")}
        return Job.from_json(self._request("POST", "/v1/correlations", data=form, files=files, headers=_prefer(wait)))

    def train(
        self,
        input: MatrixLike | None = None,
        *,
        pairs: Iterable[TrainingPair] | None = None,
        target: MatrixLike | None = None,
        target_kernel: MatrixLike | None = None,
        kernel_size: Pair | None = None,
        kernel_shape: Sequence[int] | None = None,
        lr: float | None = None,
        epochs: int | None = None,
        bias: bool | None = None,
        seed: int | None = None,
        optimizer: Optimizer | None = None,
        momentum: float | None = None,
        loss: Loss | None = None,
        tolerance: float | None = None,
        batch_size: int | None = None,
        shuffle: bool | None = None,
        device: Device | None = None,
        result_format: str | None = None,
        wait: int | None = None,
    ) -> Job:
        """Submit a kernel training; None means the server's default.

        The examples: `input` with its `target`, or several `pairs`, each `(input, target)` or
        `{"input": ..., "target": ...}`. Or give `target_kernel` instead of targets (a pair is then
        `(input, None)` or `{"input": ...}`): the server makes them. The kernel to learn is `kernel_size`
        [kh, kw] (its channels follow the examples') or `kernel_shape` ([kh, kw], [C, kh, kw] or [O, C, kh, kw]).
        """
        body = {
            "input": input,
            "pairs": None if pairs is None else _pairs(list(pairs)),
            "target": target,
            "target_kernel": target_kernel,
            "kernel_size": kernel_size,
            "kernel_shape": None if kernel_shape is None else [int(size) for size in kernel_shape],
            "lr": lr,
            "epochs": epochs,
            "bias": bias,
            "seed": seed,
            "optimizer": optimizer,
            "momentum": momentum,
            "loss": loss,
            "tolerance": tolerance,
            "batch_size": batch_size,
            "shuffle": shuffle,
            "device": device,
            "result_format": result_format,
        }
        return self._submit("/v1/kernel-trainings", _given(body), wait)

    def job(self, job_id: str) -> Job:
        return Job.from_json(self._request("GET", f"/v1/jobs/{job_id}"))

    def jobs(self, status: str | None = None, kind: str | None = None, limit: int | None = None) -> Iterator[Job]:
        """Your jobs, newest first, without results: at most `limit` of them (all with None), page after page."""
        cursor, left = None, limit
        while left is None or left > 0:
            params = _given(
                {"status": status, "kind": kind, "limit": min(left or MAX_PAGE, MAX_PAGE), "cursor": cursor}
            )
            page = self._request("GET", "/v1/jobs", params=params)
            for data in page["jobs"]:
                yield Job.from_json(data)
            if left is not None:
                left -= len(page["jobs"])
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def losses(self, job_id: str, since: int = 0) -> LossPage:
        """The training's losses of the epochs after `since`."""
        page = self._request("GET", f"/v1/jobs/{job_id}/loss", params={"since": since})
        return LossPage(tuple(page["losses"]), page["since"], page["epochs_done"], page["epochs"], page["status"])

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[Event]:
        """The job's events after `last_event_id`: a ProgressEvent per epoch, then one StatusEvent, then the end.

        When the server closes the stream early (it caps each at MAX_STREAM_SECONDS) or the connection
        drops, this reconnects with Last-Event-ID after the delay the server asked for, losing nothing.
        """
        return self._events(job_id, last_event_id, deadline=None)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """The job once it has finished (whatever its status); WaitTimeout after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for event in self._events(job_id, None, deadline):
            if isinstance(event, StatusEvent):
                return event.job
        raise StreamEnded(f"the event stream of job {job_id} ended without its status event")

    def cancel(self, job_id: str) -> Job:
        """Cancel the job: a queued one never runs, a running training stops within an epoch; returns the job."""
        return Job.from_json(self._request("DELETE", f"/v1/jobs/{job_id}"))

    def output_png(self, job_id: str) -> bytes:
        """The output of an image correlation as a PNG."""
        return self._request("GET", f"/v1/jobs/{job_id}/output.png", raw=True).content

    def output_npy(self, job_id: str) -> np.ndarray:
        """A succeeded correlation's output, read as an .npy file (float32): 409 (ApiError) until it succeeded."""
        return read_npy(self._request("GET", f"/v1/jobs/{job_id}/output.npy", raw=True).content)

    def kernel_npy(self, job_id: str) -> np.ndarray:
        """A succeeded training's learned kernel, read as an .npy file (float32): 409 (ApiError) until it succeeded."""
        return read_npy(self._request("GET", f"/v1/jobs/{job_id}/kernel.npy", raw=True).content)

    def loss_svg(self, job_id: str) -> str:
        """A training's loss curve as an SVG document."""
        return self._request("GET", f"/v1/jobs/{job_id}/loss.svg", raw=True).text

    def kernels(self) -> list[NamedKernel]:
        """The named kernels the server offers (the seed's edge detector, Sobel, ...)."""
        return [NamedKernel(k["name"], k["label"], k["matrix"]) for k in self._request("GET", "/v1/kernels")["kernels"]]

    def health(self) -> dict:
        """GET /healthz: the API process is alive."""
        return self._request("GET", "/healthz")

    def ready(self) -> dict:
        """GET /readyz: Redis and a worker answer; ApiError (503) naming what is missing otherwise."""
        return self._request("GET", "/readyz")

    def _submit(self, path: str, body: dict, wait: int | None) -> Job:
        """POST the body: as JSON (numpy arrays in the base64 form), or, when it holds a numpy array of
        NPY_MIN_ELEMENTS or more (or pairs packed as an .npz), as a form with those arrays as .npy files."""
        files = {
            name: (f"{name}.npy", npy_bytes(value), "application/x-npy")
            for name, value in body.items()
            if isinstance(value, np.ndarray) and value.size >= NPY_MIN_ELEMENTS
        }
        if isinstance(body.get("pairs"), _Npz):
            files["pairs"] = ("pairs.npz", body["pairs"].content, "application/zip")
        if not files:
            wire = {name: to_wire(value) for name, value in body.items()}
            return Job.from_json(self._request("POST", path, json=wire, headers=_prefer(wait)))
        form = {name: _form_value(name, to_wire(value)) for name, value in body.items() if name not in files}
        return Job.from_json(self._request("POST", path, data=form, files=files, headers=_prefer(wait)))

    def _request(self, method: str, path: str, *, raw: bool = False, **kwargs):
        """Send a request; its JSON (or the response itself when `raw`), ApiError for 4xx/5xx."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise _unreachable(self.base_url, error) from error
        _check(response)
        return response if raw else response.json()

    def _events(self, job_id: str, last_id: str | None, deadline: float | None) -> Iterator[Event]:
        """The event stream, reconnecting until the status event; WaitTimeout once past `deadline`."""
        retry = Retry()
        while True:
            headers = {"Accept": "text/event-stream"} | ({"Last-Event-ID": last_id} if last_id else {})
            read = STREAM_READ_TIMEOUT if deadline is None else max(0.0, deadline - time.monotonic())
            timeout = httpx.Timeout(self._http.timeout.connect, read=min(read, STREAM_READ_TIMEOUT))
            try:
                with self._http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout) as answer:
                    if answer.is_error:
                        answer.read()
                        _check(answer)
                    for sse in parse(answer.iter_lines(), retry):
                        last_id = sse.id
                        event = _event(sse.event, sse.data, sse.id)
                        if event is not None:
                            yield event
                        if isinstance(event, StatusEvent):
                            return
                        _check_deadline(job_id, deadline)
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                raise _unreachable(self.base_url, error) from error
            except httpx.ReadTimeout as error:
                _check_deadline(job_id, deadline)
                raise _unreachable(self.base_url, error) from error
            except httpx.TransportError:
                pass  # the connection dropped mid-stream: resume after the last event
            _check_deadline(job_id, deadline)
            time.sleep(retry.seconds)


def _event(name: str, data: str, event_id: str | None) -> Event | None:
    """A typed event from an SSE event of the job stream (None for names this client does not know)."""
    if name == "progress":
        fields = json.loads(data)
        return ProgressEvent(event_id or "", fields["epoch"], fields["epochs"], fields["loss"])
    if name == "status":
        return StatusEvent(event_id or "", Job.from_json(json.loads(data)))
    return None


def _check(response: httpx.Response) -> None:
    """Raise ApiError for a 4xx or 5xx answer, with its problem (or one made from its status line)."""
    if not response.is_error:
        return
    try:
        problem = Problem.from_json(response.json())
    except (ValueError, KeyError, TypeError):
        problem = Problem(title=response.reason_phrase, status=response.status_code, detail=response.text[:500])
    raise ApiError(problem)


def _check_deadline(job_id: str, deadline: float | None) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise WaitTimeout(f"job {job_id} has not finished yet")


def _unreachable(base_url: str, error: httpx.TransportError) -> ServerUnreachable:
    return ServerUnreachable(f"cannot reach the convq API at {base_url}: {error or type(error).__name__}")


def _correlation_options(options: CorrelationOptions) -> dict:
    """A correlation's options that were given, as the API takes them (in a JSON body or a form alike)."""
    unknown = options.keys() - CorrelationOptions.__annotations__.keys()
    if unknown:
        raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(unknown))}")
    return _given(
        {name: options.get(name) for name in CorrelationOptions.__annotations__}
        | {"bias": _numbers(options.get("bias"))}
    )


def _numbers(value: Numbers | None) -> float | list[float] | None:
    """A number, or a list of them (from any sequence or numpy array), as plain floats for JSON."""
    if value is None:
        return None
    return [float(number) for number in value] if isinstance(value, Sequence | np.ndarray) else float(value)


class _Npz:
    """Training pairs packed as one .npz of inputs and targets (the API's `pairs` file)."""

    def __init__(self, content: bytes):
        self.content = content


def _pairs(pairs: list[TrainingPair]) -> list[dict] | _Npz:
    """The pairs on the wire: one .npz when they are numpy arrays of one shape with NPY_MIN_ELEMENTS or more
    elements in all, else a list of pairs (their numpy arrays in the base64 form)."""
    listed = [_pair(pair) for pair in pairs]
    inputs = [pair.get("input") for pair in listed]
    targets = [pair.get("target") for pair in listed]
    packable = (
        all(isinstance(item, np.ndarray) and item.shape == inputs[0].shape for item in inputs)
        and (
            all(item is None for item in targets)
            or all(isinstance(item, np.ndarray) and item.shape == targets[0].shape for item in targets)
        )
        and sum(item.size for item in inputs) >= NPY_MIN_ELEMENTS
    )
    if not packable:
        return [{name: to_wire(value) for name, value in pair.items()} for pair in listed]
    return _Npz(npz_bytes(inputs=np.stack(inputs), targets=None if targets[0] is None else np.stack(targets)))


def _pair(pair: TrainingPair) -> dict:
    """A training pair as a dict, from (input, target) or a dict; a target of None is left out."""
    fields = pair.items() if isinstance(pair, dict) else zip(("input", "target"), pair, strict=True)
    return _given(dict(fields))


def _form_value(name: str, value) -> str:
    """A form field's text: JSON, but for a kernel's name and the names of choices, which go as they are."""
    plain = ("kernel", "result_format", "device", "optimizer", "loss")
    return value if name in plain and isinstance(value, str) else json.dumps(value)


def _given(fields: dict) -> dict:
    """The fields that were given (not None): the server applies its defaults to the others."""
    return {name: value for name, value in fields.items() if value is not None}


def _prefer(wait: int | None) -> dict[str, str]:
    return {} if wait is None else {"Prefer": f"wait={wait}"}
