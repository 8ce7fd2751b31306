"""Attacks at the limits, on the stack as `make run` starts it (gunicorn, Redis, a worker): floods of streams
and waiting submissions, huge bodies, endless jobs, gunicorn's own errors. After each, every job submitted
ends terminal with a right result, and the API answered its health checks throughout."""

import json
import selectors
import socket
import statistics
import threading
import time
from urllib.parse import urlsplit

import numpy as np
import orjson
import psutil
import pybase64
import pytest
import requests

from api.holds import Holds
from shared.settings import Settings
from shared.startup import ConfigurationError, check_settings
from tests.support import Stack, finished_job, wait_until

KEYS = {name: f"{name}-key" for name in ("alice", "bob", "carol", "dave", "erin", "frank")}
FLOODERS = ("alice", "carol", "dave", "erin", "frank")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    started = Stack(
        tmp_path_factory.mktemp("limits-stack"),
        API_KEYS=json.dumps(KEYS),
        MAX_WAIT_SECONDS="30",
        MAX_STREAM_SECONDS="60",
    )
    yield started
    started.stop()


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


def address(stack: Stack) -> tuple[str, int]:
    parts = urlsplit(stack.url)
    return parts.hostname, parts.port


def raw_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: convq", *(f"{name}: {value}" for name, value in headers.items())]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_head(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and whatever body came with them, of the response on `sock`."""
    return read_heads([sock], timeout)[0]


def _parsed(data: bytes) -> tuple[int, dict[str, str], bytes] | None:
    """A response's status, headers and body once they have all arrived (a stream: once its head has)."""
    head, found, rest = data.partition(b"\r\n\r\n")
    if not found:
        return None
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    if len(rest) < int(headers.get("content-length", 0)):
        return None
    return int(status_line.split()[1]), headers, rest


def read_heads(
    sockets: list[socket.socket], timeout: float, idle: float | None = None
) -> list[tuple[int | None, dict[str, str], bytes]]:
    """The responses on all these sockets, read side by side until `timeout` (or until none came for `idle`
    seconds); (None, {}, b"") for those that did not come."""
    data = {sock: b"" for sock in sockets}
    answers: dict = {}
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        progress = time.monotonic()
        while len(answers) < len(sockets) and (left := deadline - time.monotonic()) > 0:
            if idle is not None and time.monotonic() - progress > idle:
                break
            for key, _ in selector.select(min(left, 0.2)):
                sock = key.fileobj
                try:
                    chunk = sock.recv(65536)
                except (BlockingIOError, ConnectionResetError):
                    chunk = b""
                data[sock] += chunk
                answer = _parsed(data[sock])
                if answer is not None or not chunk:
                    answers[sock] = answer or (None, {}, data[sock])
                    selector.unregister(sock)
                    progress = time.monotonic()
    return [answers.get(sock, (None, {}, b"")) for sock in sockets]


def job_of(stack: Stack, name: str, job_id: str) -> dict:
    return requests.get(f"{stack.url}/v1/jobs/{job_id}", headers=auth(name), timeout=10).json()


def wait_for(stack: Stack, name: str, job_id: str, timeout: float = 60) -> dict:
    return finished_job(lambda: job_of(stack, name, job_id), timeout, "a job")


class Latency:
    """Time GET /healthz and another key's GET of its job, alternately, until stopped; fail on any error."""

    def __init__(self, stack: Stack, job_id: str, samples: int = 200):
        self.stack, self.job_id, self.samples = stack, job_id, samples
        self.times: list[float] = []
        self.errors: list[str] = []

    def run(self, deadline: float) -> None:
        session = requests.Session()
        for index in range(self.samples):
            if time.monotonic() > deadline:
                self.errors.append(f"ran out of time after {index} requests")
                return
            path = "/healthz" if index % 2 else f"/v1/jobs/{self.job_id}"
            started = time.perf_counter()
            try:
                response = session.get(self.stack.url + path, headers=auth("bob"), timeout=2)
                if response.status_code != 200:
                    self.errors.append(f"{path}: {response.status_code}")
            except requests.RequestException as error:
                self.errors.append(f"{path}: {error}")
            self.times.append(time.perf_counter() - started)
            time.sleep(0.01)

    @property
    def p99(self) -> float:
        return statistics.quantiles(self.times, n=100)[98]


def test_500_streams_and_waiting_submissions_leave_health_and_other_keys_fast(stack):
    """Five keys open 400 event streams and 100 `Prefer: wait` submissions at once; bob and /healthz stay fast."""
    long_training = {"input": [[0.5] * 200] * 200, "target_kernel": [[0.1] * 3] * 3}
    long_training |= {"lr": 1e-9, "epochs": 10_000, "optimizer": "adam"}
    trainings = {}
    for name in FLOODERS:
        response = requests.post(f"{stack.url}/v1/kernel-trainings", json=long_training, headers=auth(name), timeout=10)
        assert response.status_code == 202, response.text
        trainings[name] = response.json()["id"]
    bobs = requests.post(
        f"{stack.url}/v1/correlations", json={"input": [[1, 2]], "kernel": [[3]]}, headers=auth("bob"), timeout=10
    ).json()["id"]
    waiting_body = orjson.dumps({"input": [[1.0, 2.0]], "kernel": [[2.0]]})

    sockets = []
    try:
        for index in range(500):
            name = FLOODERS[index % len(FLOODERS)]
            headers = auth(name) | {"Connection": "close"}
            if index % 5 == 4:  # one in five: a waiting submission, queued behind the trainings
                headers |= {"Content-Type": "application/json", "Prefer": "wait=20"}
                request = raw_request("POST", "/v1/correlations", headers, waiting_body)
            else:
                request = raw_request("GET", f"/v1/jobs/{trainings[name]}/events", headers)
            sock = socket.create_connection(address(stack), timeout=10)
            sock.sendall(request)
            sockets.append((index % 5 == 4, name, sock))

        # Every stream is answered at once (served, or refused); a waiting submission waits if it got a place.
        answers = read_heads([sock for _, _, sock in sockets], 20, idle=2)
        latency = Latency(stack, bobs)
        latency.run(time.monotonic() + 30)
        for name, job_id in trainings.items():  # the streams end, the waiting submissions run
            requests.delete(f"{stack.url}/v1/jobs/{job_id}", headers=auth(name), timeout=10)
        waited = [index for index, answer in enumerate(answers) if answer[0] is None]
        for index, answer in zip(waited, read_heads([sockets[index][2] for index in waited], 40), strict=True):
            answers[index] = answer
    finally:
        for _, _, sock in sockets:
            sock.close()
    streams = [answer for (waiting, _, _), answer in zip(sockets, answers, strict=True) if not waiting]
    submissions = [(name, *answer) for (waiting, name, _), answer in zip(sockets, answers, strict=True) if waiting]

    print(
        f"\nwith 400 streams and 100 waiting submissions open: p99 {latency.p99 * 1000:.1f} ms, "
        f"median {statistics.median(latency.times) * 1000:.1f} ms over {len(latency.times)} requests; "
        f"streams {sorted(collections_count(status for status, _, _ in streams).items())}, "
        f"submissions {sorted(collections_count(status for _, status, _, _ in submissions).items())}"
    )
    assert latency.errors == [] and latency.p99 < 0.1
    served = [status for status, _, _ in streams if status == 200]
    assert 0 < len(served) <= 2 * 32  # two processes, MAX_HELD_REQUESTS each
    for status, headers, body in streams:
        if status != 200:
            assert status in (429, 503) and headers["content-type"] == "application/problem+json"
            assert int(headers["retry-after"]) > 0 and json.loads(body)["status"] == status
    # A waiting submission beyond the share is queued all the same and answered at once, its preference not applied.
    applied = [status for _, status, headers, _ in submissions if "preference-applied" in headers]
    assert {status for _, status, headers, _ in submissions if "preference-applied" not in headers} == {202}
    assert set(applied) <= {200, 202} and len(applied) + len(served) <= 2 * 32

    for name, job_id in trainings.items():
        assert wait_for(stack, name, job_id)["status"] == "cancelled"
    for name, _, _, body in submissions:
        job = wait_for(stack, name, json.loads(body)["id"])
        assert job["status"] == "succeeded" and job["result"]["output"] == [[2.0, 4.0]]
    assert wait_for(stack, "bob", bobs)["result"]["output"] == [[3.0, 6.0]]
    # The places come back when the streams end: a waiting submission is served again.
    wait_until(lambda: _waits(stack), 30, "a waiting submission to be applied again", interval=0.5)


def collections_count(values) -> dict:
    counts: dict = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def _waits(stack: Stack) -> bool:
    response = requests.post(
        f"{stack.url}/v1/correlations",
        json={"input": [[1, 2]], "kernel": [[1]]},
        headers=auth("alice") | {"Prefer": "wait=10"},
        timeout=15,
    )
    return response.status_code == 200 and response.headers.get("Preference-Applied") == "wait=10"


class PeakMemory:
    """The highest resident memory of each API worker process above where it started, sampled every 2 ms."""

    def __init__(self, stack: Stack):
        gunicorns = [
            child
            for child in psutil.Process(stack.process.pid).children(recursive=True)
            if "gunicorn" in " ".join(child.cmdline())
        ]
        pids = {process.pid for process in gunicorns}
        self.workers = [process for process in gunicorns if process.ppid() in pids]
        self.peak = {worker.pid: 0 for worker in self.workers}

    def __enter__(self) -> "PeakMemory":
        self.base = {worker.pid: worker.memory_info().rss for worker in self.workers}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stopping.is_set():
            for worker in self.workers:
                self.peak[worker.pid] = max(self.peak[worker.pid], worker.memory_info().rss - self.base[worker.pid])
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join()

    @property
    def most(self) -> int:
        return max(self.peak.values())


def post_body(stack: Stack, path: str, body: bytes, name: str = "bob") -> tuple[int, dict, bytes, float]:
    """POST a big body over a raw socket (a 413 may come, and the connection close, before it is all sent)."""
    started = time.perf_counter()
    with socket.create_connection(address(stack), timeout=60) as sock:
        headers = auth(name) | {"Content-Type": "application/json", "Content-Length": str(len(body))}
        sock.sendall(raw_request("POST", path, headers))
        view = memoryview(body)
        try:
            for low in range(0, len(body), 1 << 20):
                sock.sendall(view[low : low + (1 << 20)])
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the end: the answer is waiting
        status, headers, answer = read_head(sock, 60)
    return status, headers, answer, time.perf_counter() - started


def nested(array: np.ndarray) -> bytes:
    return orjson.dumps(array, option=orjson.OPT_SERIALIZE_NUMPY)


def test_huge_bodies_are_refused_before_they_cost_and_the_largest_cost_at_most_3x(stack):
    """100 MB of nested lists: 413 at once. The largest bodies taken: at most ~3x their size in the API process."""
    generator = np.random.default_rng(7)
    matrix = generator.random((2048, 2048), dtype=np.float32)
    row = b"[" + b",".join([b"0.5"] * 4096) + b"]"
    hundred_mb = b'{"kernel": [[1]], "input": [' + b",".join([row] * 6400) + b"]}"  # 6400 x 4096 = 26M elements
    too_many = b'{"kernel": [[1]], "input": [' + b",".join([b"[" + b",".join([b"0"] * 3000) + b"]"] * 3000) + b"]}"
    largest_json = b'{"kernel": [[1]], "result_format": "base64", "input": ' + nested(matrix) + b"}"
    tight = b'{"kernel": [[1]], "result_format": "base64", "input": ' + nested(np.zeros((2048, 2048), np.int8)) + b"}"
    packed = {"shape": [2048, 2048], "dtype": "float32", "data": pybase64.b64encode_as_string(matrix)}
    largest_base64 = orjson.dumps(
        {"input": packed, "target": packed, "kernel_size": [1, 1], "epochs": 1, "result_format": "base64"}
    )
    million = 2**20
    cases = [  # name, path, body, status, the most it may cost the API process (bytes)
        ("100 MB of nested lists", "/v1/correlations", hundred_mb, 413, 0.1 * len(hundred_mb)),
        ("3000 x 3000 zeros: over the element limit", "/v1/correlations", too_many, 422, 1.5 * len(too_many)),
        ("2048 x 2048 random floats as JSON", "/v1/correlations", largest_json, 202, 3 * len(largest_json)),
        (
            "2048 x 2048 input and target in base64",
            "/v1/kernel-trainings",
            largest_base64,
            202,
            3 * len(largest_base64),
        ),
        # At 2 bytes an element, the float32 array and the stored base64 request outweigh the body: what bounds
        # the cost is then the element limit, about 27 bytes an element (measured), so 32 are allowed.
        ("2048 x 2048 zeros as JSON (2 bytes an element)", "/v1/correlations", tight, 202, 32 * 4 * million),
    ]
    jobs = []
    for name, path, body, status, cost in cases:
        with PeakMemory(stack) as memory:
            answer_status, headers, answer, elapsed = post_body(stack, path, body)
        print(
            f"\n{name}: {len(body) / 1e6:.1f} MB, {answer_status} in {elapsed:.2f} s, "
            f"API process peak +{memory.most / 1e6:.1f} MB ({memory.most / len(body):.2f}x the body)"
        )
        assert answer_status == status, answer[:500]
        assert memory.most <= cost
        if status != 202:
            assert headers["content-type"] == "application/problem+json"
            assert elapsed < 5
        else:
            jobs.append((json.loads(answer)["id"], name))
        assert requests.get(f"{stack.url}/healthz", timeout=2).status_code == 200
    assert "MAX_BODY_BYTES" in json.loads(post_body(stack, "/v1/correlations", hundred_mb)[2])["detail"]
    assert json.loads(post_body(stack, "/v1/correlations", too_many)[2])["errors"][0]["loc"] == "/input"

    for job_id, name in jobs:
        job = wait_for(stack, "bob", job_id, timeout=120)
        assert job["status"] == "succeeded", (name, job["error"])
        result = job["result"]
        if "output" in result:
            output = np.frombuffer(pybase64.b64decode(result["output"]["data"]), dtype=np.float32)
            expected = np.zeros(2048 * 2048, np.float32) if "zeros" in name else matrix.ravel()
            assert np.array_equal(output, expected), name
        else:
            assert result["epochs_run"] == 1


def test_a_job_that_would_outrun_the_time_limit_is_refused_with_its_estimate(stack):
    """1000 pairs of 2 x 2 in batches of 1 for 10,000 epochs: 0.2% of MAX_WORK, hours of optimizer steps."""
    pairs = [{"input": [[1.0, 2.0], [3.0, 4.0]], "target": [[1.0]]}] * 1000
    endless = {"pairs": pairs, "kernel_size": [2, 2], "batch_size": 1, "epochs": 10_000}
    response = requests.post(f"{stack.url}/v1/kernel-trainings", json=endless, headers=auth("bob"), timeout=30)
    assert response.status_code == 422, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    [error] = response.json()["errors"]
    assert error["type"] == "time_over_budget" and "JOB_TIME_LIMIT_SECONDS" in error["msg"]
    assert " s (" in error["msg"] and "570 s" in error["msg"]  # the estimate, then the soft limit of 600 s

    huge_stride = {"input": [[1, 2], [3, 4]], "kernel": [[1]], "stride": 10**30}
    response = requests.post(f"{stack.url}/v1/correlations", json=huge_stride, headers=auth("bob"), timeout=10)
    assert response.status_code == 422 and {e["loc"] for e in response.json()["errors"]} == {"/stride/0", "/stride/1"}

    schemas = requests.get(f"{stack.url}/openapi.json", timeout=10).json()["components"]["schemas"]
    training, correlation = schemas["KernelTrainingRequest"]["properties"], schemas["CorrelationRequest"]["properties"]
    for field in (correlation["stride"], correlation["padding"], training["kernel_size"]):
        assert all("maximum" in option for option in field["anyOf"][0:1])
    assert "maximum" in training["epochs"] and "maximum" in json.dumps(training["batch_size"])

    # What fits is taken and runs to the end.
    fits = {"pairs": pairs[:10], "kernel_size": [2, 2], "batch_size": 1, "epochs": 20, "lr": 0.01}
    response = requests.post(f"{stack.url}/v1/kernel-trainings", json=fits, headers=auth("bob"), timeout=10)
    assert response.status_code == 202, response.text
    job = wait_for(stack, "bob", response.json()["id"])
    assert job["status"] == "succeeded" and job["result"]["epochs_run"] == 20


@pytest.mark.parametrize(
    "request_bytes,status",
    [
        (b"GET /healthz HTTP/1.1\r\nHost: convq\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\nHost: convq\r\n" + b"X-Many: 1\r\n" * 200 + b"\r\n", 431),
        (b"NOT A REQUEST\r\n\r\n", 400),
        (b"GET /healthz HTTP/9.9\r\nHost: convq\r\n\r\n", 400),
    ],
    ids=["header too long", "too many headers", "malformed request line", "unknown HTTP version"],
)
def test_gunicorns_own_errors_are_problem_json(stack, request_bytes, status):
    with socket.create_connection(address(stack), timeout=10) as sock:
        sock.sendall(request_bytes)
        answer_status, headers, body = read_head(sock, 10)
    assert answer_status == status and headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["status"] == status and problem["title"] and problem["detail"]
    assert requests.get(f"{stack.url}/healthz", timeout=2).status_code == 200


def test_holds_count_places_per_caller_and_per_process():
    holds = Holds(total=3, per_caller=2)
    assert [holds.take("alice"), holds.take("alice"), holds.take("alice")] == [None, None, "caller"]
    assert [holds.take("bob"), holds.take("bob")] == [None, "process"]
    holds.give_back("alice")
    assert holds.take("bob") is None and holds.take("carol") == "process"


def test_the_api_refuses_to_start_when_held_requests_could_take_every_thread():
    with pytest.raises(ConfigurationError, match="MAX_HELD_REQUESTS must be below API_THREADS"):
        check_settings(Settings(api_threads=16, max_held_requests=16))
