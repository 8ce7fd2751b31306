"""`make bench`: convq and its baselines measured side by side in one run; a table, then one line per comparison.

Each comparison line reads `<name>: <ratio>x (<convq figure> vs <baseline figure>)`; the ratio is
baseline / convq for times and convq / baseline for throughputs, so higher is better. Figures are
medians of several repetitions, convq and baseline interleaved so that both see the same machine.
docs/PERFORMANCE.md explains each comparison and what limits it.
"""

import argparse
import io
import multiprocessing
import multiprocessing.synchronize
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import orjson
import psutil
import pybase64
import requests
import torch
from redis import Redis

from bench import stacks
from services import Training, corr2d, corr2d_reference, correlate, fit_kernel, learn_kernel
from shared.arrays import to_base64

TINY = {"input": np.arange(64, dtype=np.float32).reshape(8, 8).tolist(), "kernel": [[1.0, 0.0, -1.0]] * 3}
WAIT = {"Prefer": "wait=60"}
NPY = "application/x-npy"
CLIENT_NICENESS = 10  # of the client that streams big jobs beside tiny ones (big_stream)


@dataclass
class Comparison:
    name: str
    convq: float
    baseline: float
    unit: str  # "s" for times (lower is better), anything else is a throughput
    target: float

    @property
    def ratio(self) -> float:
        return self.baseline / self.convq if self.unit == "s" else self.convq / self.baseline

    def figure(self, value: float) -> str:
        if self.unit != "s":
            return f"{value:,.0f} {self.unit}"
        return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.2f} s"

    def line(self) -> str:
        return f"{self.name}: {self.ratio:.2f}x ({self.figure(self.convq)} vs {self.figure(self.baseline)})"


def median_time(work: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        work()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def side_by_side(convq: Callable[[], float], baseline: Callable[[], float], rounds: int) -> tuple[float, float]:
    """Medians of `rounds` measurements of each, taken alternately."""
    ours, theirs = interleaved([convq, baseline], rounds)
    return ours, theirs


def interleaved(measures: list[Callable[[], float]], rounds: int) -> list[float]:
    """Medians of `rounds` measurements of each measure, taken in turn."""
    taken: list[list[float]] = [[] for _ in measures]
    for _ in range(rounds):
        for measure, values in zip(measures, taken, strict=True):
            values.append(measure())
    return [statistics.median(values) for values in taken]


# --- the core, in process ----------------------------------------------------------------------


def core(scale: int) -> list[Comparison]:
    generator = torch.Generator().manual_seed(0)
    X256, K3 = torch.randn((256, 256), generator=generator), torch.randn((3, 3), generator=generator)
    X1024, K11 = torch.randn((1024, 1024), generator=generator), torch.randn((11, 11), generator=generator)

    def conv2d(X, K):
        return lambda: torch.nn.functional.conv2d(X[None, None], K[None, None])

    comparisons = [
        Comparison(
            "core_vs_seed_256",
            median_time(lambda: corr2d(X256, K3), 50 * scale),
            median_time(lambda: corr2d_reference(X256, K3), max(1, scale), warmup=0),
            "s",
            1000,
        )
    ]
    for name, K, target in (("core_vs_conv2d_1024_k3", K3, 10), ("core_vs_conv2d_1024_k11", K11, 2)):
        ours, theirs = side_by_side(
            lambda K=K: median_time(lambda: corr2d(X1024, K), 10 * scale),
            lambda K=K: median_time(conv2d(X1024, K), 10 * scale),
            3,
        )
        comparisons.append(Comparison(name, ours, theirs, "s", target))
    comparisons.append(train_epoch(scale))
    comparisons += channels(scale)
    return comparisons


def channels(scale: int, epochs: int = 10) -> list[Comparison]:
    """Channels and pairs run on torch's own conv2d and optimizers: the wrapping should cost next to nothing."""
    generator = torch.Generator().manual_seed(2)
    X, K = torch.randn((3, 256, 256), generator=generator), torch.randn((8, 3, 3, 3), generator=generator)
    correlation = side_by_side(
        lambda: median_time(lambda: correlate(X, K, bias=[0.5] * 8), 10 * scale),
        lambda: median_time(lambda: torch.nn.functional.conv2d(X[None], K, torch.full((8,), 0.5)), 10 * scale),
        3,
    )
    inputs = torch.randn((16, 3, 64, 64), generator=generator)
    targets = torch.nn.functional.conv2d(inputs, K[:4])
    training = Training(lr=0.01, epochs=epochs, optimizer="adam", loss="mean", batch_size=4)
    fitting = side_by_side(
        lambda: median_time(lambda: fit_kernel(inputs, targets, (4, 3, 3, 3), training), scale) / epochs,
        lambda: median_time(lambda: torch_training(inputs, targets, epochs), scale) / epochs,
        3,
    )
    return [
        Comparison("channels_3_to_8_256_vs_conv2d", *correlation, "s", 0.9),
        Comparison("pairs_epoch_adam_vs_torch_loop", *fitting, "s", 0.9),
    ]


def torch_training(inputs: torch.Tensor, targets: torch.Tensor, epochs: int, batch: int = 4) -> None:
    """The same training written directly: nn.Conv2d, mean squared error, torch.optim.Adam, batches in order."""
    conv = torch.nn.Conv2d(3, 4, kernel_size=3, bias=False)
    optimizer = torch.optim.Adam(conv.parameters(), lr=0.01)
    for _ in range(epochs):
        for start in range(0, len(inputs), batch):
            loss = ((conv(inputs[start : start + batch]) - targets[start : start + batch]) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def seed_training(X: torch.Tensor, Y: torch.Tensor, lr: float, epochs: int) -> None:
    """The seed's method: nn.Conv2d with autograd, summed squared error, plain gradient descent."""
    conv = torch.nn.Conv2d(1, 1, kernel_size=(3, 3), bias=False)
    X4, Y4 = X[None, None], Y[None, None]
    for _ in range(epochs):
        loss = ((conv(X4) - Y4) ** 2).sum()
        conv.zero_grad()
        loss.backward()
        conv.weight.data[:] -= lr * conv.weight.grad


def train_epoch(scale: int, epochs: int = 20) -> Comparison:
    generator = torch.Generator().manual_seed(1)
    X = torch.rand((512, 512), generator=generator)
    Y = corr2d(X, torch.randn((3, 3), generator=generator))
    ours, theirs = side_by_side(
        lambda: median_time(lambda: learn_kernel(X, Y, (3, 3), lr=1e-6, epochs=epochs), scale) / epochs,
        lambda: median_time(lambda: seed_training(X, Y, 1e-6, epochs), scale) / epochs,
        3,
    )
    return Comparison("train_epoch_vs_nn_conv2d_512", ours, theirs, "s", 2)


# --- the whole stack -----------------------------------------------------------------------------


def throughput(one_job: Callable[[requests.Session], None], clients: int, seconds: float) -> float:
    """Jobs per second that `clients` threads complete, each looping `one_job`, for `seconds`."""
    done = [0] * clients
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        with requests.Session() as http:
            while time.monotonic() < deadline:
                one_job(http)
                done[index] += 1

    threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.monotonic() - started)


def convq_tiny(url: str) -> Callable[[requests.Session], None]:
    def one_job(http: requests.Session) -> None:
        response = http.post(f"{url}/v1/correlations", json=TINY, headers=WAIT, timeout=60)
        assert response.status_code == 200 and response.json()["status"] == "succeeded", response.text

    return one_job


def bare_tiny(url: str, poll_seconds: float = 0.002) -> Callable[[requests.Session], None]:
    def one_job(http: requests.Session) -> None:
        task_id = http.post(f"{url}/correlations", json=TINY, timeout=60).json()["id"]
        while (reply := http.get(f"{url}/correlations/{task_id}", timeout=60).json())["status"] != "SUCCESS":
            assert reply["status"] in ("PENDING", "STARTED"), reply
            time.sleep(poll_seconds)

    return one_job


def latency_p50(one: Callable[[], object], jobs: int) -> float:
    return median_time(one, jobs, warmup=5)


def big_correlation(url: str, scale: int, form: str) -> Comparison:
    """A 1024 x 1024 correlation through the stack vs decode + compute + encode in one process (same codecs)."""
    generator = torch.Generator().manual_seed(2)
    X, K = torch.randn((1024, 1024), generator=generator), torch.randn((3, 3), generator=generator)
    if form == "json":
        body = orjson.dumps({"input": X.numpy(), "kernel": K.numpy()}, option=orjson.OPT_SERIALIZE_NUMPY)
    else:
        body = orjson.dumps({"input": to_base64(X.numpy()), "kernel": K.tolist(), "result_format": "base64"})

    def in_process() -> bytes:
        request = orjson.loads(body)
        if form == "json":
            X = np.array(request["input"], dtype=np.float32)
        else:
            packed = request["input"]
            X = np.frombuffer(pybase64.b64decode_as_bytearray(packed["data"]), "<f4").reshape(packed["shape"])
        output = corr2d(torch.from_numpy(X), torch.tensor(request["kernel"])).contiguous().numpy()
        if form == "json":
            return orjson.dumps({"output": output, "shape": list(output.shape)}, option=orjson.OPT_SERIALIZE_NUMPY)
        return orjson.dumps({"output": to_base64(output), "shape": list(output.shape)})

    def through_stack() -> None:
        headers = {**WAIT, "Content-Type": "application/json"}
        response = requests.post(f"{url}/v1/correlations", data=body, headers=headers, timeout=120)
        assert response.status_code == 200, response.text[:500]

    with torch_threads(stacks.WORKER_THREADS):
        ours, theirs = side_by_side(
            lambda: median_time(through_stack, 2 * scale), lambda: median_time(in_process, 2 * scale), 3
        )
    target = 0.5 if form == "json" else 0.7
    return Comparison(f"e2e_1024_{form}_vs_inprocess", ours, theirs, "s", target)


def big_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1024 x 1024 input and 3 x 3 kernel of the big-array lines."""
    generator = torch.Generator().manual_seed(2)
    return torch.randn((1024, 1024), generator=generator).numpy(), torch.randn((3, 3), generator=generator).numpy()


def npy_file(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def convq_npy_job(url: str, http: requests.Session, X: bytes, K: bytes) -> np.ndarray:
    """A correlation of .npy files, answered with output.npy in the same round trip (Prefer: wait, Accept)."""
    files = {"input": ("input.npy", X, NPY), "kernel": ("kernel.npy", K, NPY)}
    response = http.post(f"{url}/v1/correlations", files=files, headers={**WAIT, "Accept": NPY}, timeout=120)
    assert response.status_code == 200 and response.headers["Content-Type"] == NPY, response.text[:500]
    return np.load(io.BytesIO(response.content))


def big_npy(running: stacks.Stacks, scale: int) -> Comparison:
    """A 1024 x 1024 correlation as .npy in and out vs np.load + the same core + np.save in one process; and the
    floor of such a job under convq's design (bench/floor.py), measured in turn with both."""
    X, K = map(npy_file, big_arrays())

    def in_process() -> bytes:
        output = corr2d(torch.from_numpy(np.load(io.BytesIO(X))), torch.from_numpy(np.load(io.BytesIO(K))))
        return npy_file(output.contiguous().numpy())

    def floor(http: requests.Session) -> None:
        assert len(http.post(f"{running.floor_url}/bytes", data=X, timeout=120).content) == len(X)

    with requests.Session() as http, torch_threads(stacks.WORKER_THREADS):
        ours, theirs, least = interleaved(
            [
                lambda: median_time(lambda: convq_npy_job(running.convq_url, http, X, K), 5 * scale),
                # Warmed up more: its first runs fault in fresh pages for each 4 MB array (8-13 ms, then 2.5-3).
                lambda: median_time(in_process, 5 * scale, warmup=5),
                lambda: median_time(lambda: floor(http), 5 * scale),
            ],
            3,
        )
    print(
        f"floor of a 1024 x 1024 .npy job (bench/floor.py: its bytes through HTTP and the bulk Redis, nothing else): "
        f"{least * 1000:.3g} ms, so e2e_1024_npy_vs_inprocess is at most {theirs / least:.2f}x on this machine"
    )
    return Comparison("e2e_1024_npy_vs_inprocess", ours, theirs, "s", 0.15)


def big_vs_bare(convq_url: str, bare_url: str, scale: int, poll_seconds: float = 0.002) -> Comparison:
    """The same 1024 x 1024 job through convq (.npy, as its client sends big arrays) and through the bare app
    (base64 as the task's argument, the output back through Celery's result backend, polled)."""
    X, K = big_arrays()
    X_npy, K_npy, body = npy_file(X), npy_file(K), {"input": to_base64(X), "kernel": K.tolist()}

    def bare(http: requests.Session) -> np.ndarray:
        task_id = http.post(f"{bare_url}/correlations", json=body, timeout=120).json()["id"]
        while (reply := http.get(f"{bare_url}/correlations/{task_id}", timeout=120).json())["status"] != "SUCCESS":
            assert reply["status"] in ("PENDING", "STARTED"), reply
            time.sleep(poll_seconds)
        output = reply["output"]
        return np.frombuffer(pybase64.b64decode(output["data"]), "<f4").reshape(output["shape"])

    with requests.Session() as http:
        ours, theirs = side_by_side(
            lambda: median_time(lambda: convq_npy_job(convq_url, http, X_npy, K_npy), 3 * scale),
            lambda: median_time(lambda: bare(http), 3 * scale),
            3,
        )
    return Comparison("e2e_1024_vs_bare", ours, theirs, "s", 2)


def stream_big_jobs(url: str, stopping: multiprocessing.synchronize.Event) -> None:
    X, K = map(npy_file, big_arrays())
    with requests.Session() as http:
        while not stopping.is_set():
            convq_npy_job(url, http, X, K)


@contextmanager
def big_stream(url: str) -> Iterator[None]:
    """A client submitting 1024 x 1024 .npy correlations one after another while the block runs, in a process of
    its own: in this one, building 4 MB bodies and reading 4 MB answers would hold the GIL that the tiny jobs'
    client needs, and the tiny jobs' times would measure this script, not the service. For the same reason it
    runs at a low priority: on a small machine its CPU (a fifth of a core, measured) would count as the
    service's, where a real client of big jobs runs on a machine of its own."""
    context = multiprocessing.get_context("fork")  # the child runs no torch: forking after torch is safe here
    stopping = context.Event()
    process = context.Process(target=stream_big_jobs, args=(url, stopping))
    process.start()
    psutil.Process(process.pid).nice(CLIENT_NICENESS)
    try:
        time.sleep(0.5)  # under way
        yield
    finally:
        stopping.set()
        process.join(120)


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[18]


def tiny_beside_big(url: str, scale: int, rounds: int = 3) -> Comparison:
    """A tiny job's p95 latency alone vs beside a continuous stream of 1024 x 1024 jobs, alternating."""
    alone, beside = [], []
    with requests.Session() as http:
        one = convq_tiny(url)

        def latencies(count: int) -> list[float]:
            times = []
            for _ in range(count):
                started = time.perf_counter()
                one(http)
                times.append(time.perf_counter() - started)
            return times

        latencies(5)
        for _ in range(rounds):
            alone += latencies(40 * scale)
            with big_stream(url):
                beside += latencies(40 * scale)
    print(
        f"tiny job latency: alone p50 {statistics.median(alone) * 1000:.1f} ms p95 {p95(alone) * 1000:.1f} ms; "
        f"beside 1024 x 1024 jobs p50 {statistics.median(beside) * 1000:.1f} ms p95 {p95(beside) * 1000:.1f} ms"
    )
    return Comparison("tiny_p95_alone_vs_beside_big", p95(beside), p95(alone), "s", 0.67)


def redis_cost(
    running: stacks.Stacks, label: str, one_job: Callable[[requests.Session], object], jobs: int
) -> list[str]:
    """What one job costs each Redis, measured over `jobs` jobs one after another (results retained): the AOF bytes
    each Redis wrote, the memory it kept, the commands it ran and the time spent running them (commandstats: the
    time that Redis's one thread is busy, so 1 s over it is where that Redis saturates)."""
    redises = {"queue": Redis.from_url(running.redis_url), "bulk": Redis.from_url(running.bulk_redis_url)}
    rewrite_at = {name: redis.config_get("auto-aof-rewrite-percentage") for name, redis in redises.items()}
    for redis in redises.values():
        redis.config_set("auto-aof-rewrite-percentage", 0)  # no rewrite in the middle: the AOF only grows
    try:
        for redis in redises.values():  # a rewrite that began before would shrink the AOF mid-measure
            while redis.info("persistence").get("aof_rewrite_in_progress"):
                time.sleep(0.05)
        before = {name: _redis_sizes(redis) for name, redis in redises.items()}
        for redis in redises.values():
            redis.config_resetstat()
        with requests.Session() as http:
            for _ in range(jobs):
                one_job(http)
        lines = []
        for name, redis in redises.items():
            aof, kept = ((after - start) / jobs for after, start in zip(_redis_sizes(redis), before[name], strict=True))
            stats = redis.info("commandstats")
            calls = sum(stat["calls"] for stat in stats.values()) / jobs
            busy = sum(stat["usec"] for stat in stats.values()) / jobs
            lines.append(
                f"{label}: {name} Redis AOF {aof / 1024:,.1f} KB written, {kept / 1024:,.1f} KB kept, {calls:.1f} "
                f"commands, {busy / 1000:.2f} ms busy per job (saturates near {1e6 / max(busy, 1):,.0f} such jobs/s)"
            )
    finally:
        for name, redis in redises.items():
            redis.config_set("auto-aof-rewrite-percentage", rewrite_at[name]["auto-aof-rewrite-percentage"])
    return lines


def _redis_sizes(redis: Redis) -> tuple[int, int]:
    """The size of a Redis's append-only file (0 without one) and the memory it uses, in bytes."""
    return redis.info("persistence").get("aof_current_size", 0), redis.info("memory")["used_memory"]


def redis_costs(running: stacks.Stacks) -> list[str]:
    """The Redis cost of a tiny job and of a 1024 x 1024 .npy job, and both Redises' peak memory over the run."""
    X, K = map(npy_file, big_arrays())
    tiny = convq_tiny(running.convq_url)
    lines = redis_cost(running, "tiny job", tiny, 200)
    lines += redis_cost(running, "1024 x 1024 .npy job", lambda http: convq_npy_job(running.convq_url, http, X, K), 10)
    for name, url in (("queue (the bare app's results too)", running.redis_url), ("bulk", running.bulk_redis_url)):
        peak = Redis.from_url(url).info("memory")["used_memory_peak"]
        lines.append(f"{name} Redis used_memory_peak over the run: {peak / 2**20:.0f} MB")
    return lines


def training_overhead(url: str, scale: int, epochs: int = 200) -> Comparison:
    """A 512 x 512, 3 x 3, 200-epoch training through the stack vs the same core looped in process."""
    generator = torch.Generator().manual_seed(3)
    X, K = torch.rand((512, 512), generator=generator), torch.randn((3, 3), generator=generator)
    body = {"input": to_base64(X.numpy()), "target_kernel": K.tolist(), "epochs": epochs, "lr": 1e-6}

    def through_stack() -> None:
        response = requests.post(f"{url}/v1/kernel-trainings", json=body, headers=WAIT, timeout=120)
        job = response.json()
        assert job["status"] == "succeeded" and len(job["result"]["loss_history"]) == epochs, response.text[:500]

    def in_process() -> None:
        learn_kernel(X, corr2d(X, K), (3, 3), lr=1e-6, epochs=epochs)

    with torch_threads(stacks.WORKER_THREADS):
        ours, theirs = side_by_side(
            lambda: median_time(through_stack, scale), lambda: median_time(in_process, scale), 3
        )
    return Comparison("train_service_overhead_512", ours, theirs, "s", 0.9)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run a block with torch using as many threads as a worker process does, for like-for-like timings."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def big(scale: int) -> tuple[list[Comparison], list[str]]:
    """The big-array lines alone (--only big): .npy end to end, against the bare app, tiny jobs beside big ones."""
    with stacks.Stacks() as running:
        return big_lines(running, scale)


def big_lines(running: stacks.Stacks, scale: int) -> tuple[list[Comparison], list[str]]:
    comparisons = [
        big_npy(running, scale),
        big_vs_bare(running.convq_url, running.bare_url, scale),
        tiny_beside_big(running.convq_url, scale),
    ]
    return comparisons, redis_costs(running)


def stack(scale: int, clients: int) -> tuple[list[Comparison], dict[str, float], list[str]]:
    with stacks.Stacks() as running:
        bare_celery = stacks.bare_celery(running.bare_redis_url)
        ours, theirs = side_by_side(
            lambda: throughput(convq_tiny(running.convq_url), clients, 3.0 * scale),
            lambda: throughput(bare_tiny(running.bare_url), clients, 3.0 * scale),
            3,
        )
        comparisons = [Comparison("e2e_tiny_throughput_vs_bare", ours, theirs, "jobs/s", 1.0)]
        with requests.Session() as http:
            one = convq_tiny(running.convq_url)
            ours, theirs = side_by_side(
                lambda: latency_p50(lambda: one(http), 100 * scale),
                lambda: latency_p50(
                    lambda: bare_celery.delay(TINY["input"], TINY["kernel"]).get(timeout=60), 100 * scale
                ),
                3,
            )
        comparisons.append(Comparison("e2e_tiny_latency_vs_bare_celery", ours, theirs, "s", 0.5))
        comparisons.append(big_correlation(running.convq_url, scale, "base64"))
        comparisons.append(training_overhead(running.convq_url, scale))
        big_comparisons, redis_lines = big_lines(running, scale)
        comparisons += big_comparisons
        peaks = {f"{role} (no nested-list 1024 x 1024 bodies)": mb for role, mb in running.peak_rss_mb().items()}
        comparisons.insert(2, big_correlation(running.convq_url, scale, "json"))
        peaks |= {f"{role} (all)": mb for role, mb in running.peak_rss_mb().items()}
        return comparisons, peaks, redis_lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1, help="multiply repetitions and durations (default 1)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients for the throughput test")
    parser.add_argument("--only", choices=("core", "stack", "big"), help="run one half, or the big-array lines")
    args = parser.parse_args()
    print(f"convq benchmark: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    comparisons, peaks, redis_lines = [], {}, []
    if args.only in (None, "core"):
        comparisons += core(args.scale)
    if args.only in (None, "stack"):
        measured, peaks, redis_lines = stack(args.scale, args.clients)
        comparisons += measured
    if args.only == "big":
        comparisons, redis_lines = big(args.scale)
    print(f"\n{'comparison':34s} {'convq':>14s} {'baseline':>14s} {'ratio':>8s} {'target':>8s}")
    for c in comparisons:
        met = "" if c.ratio >= c.target else "  (below target)"
        print(
            f"{c.name:34s} {c.figure(c.convq):>14s} {c.figure(c.baseline):>14s} {c.ratio:7.2f}x {c.target:7.2f}x{met}"
        )
    for role, megabytes in peaks.items():
        print(f"peak RSS of one {role} process: {megabytes:.0f} MB")
    for line in redis_lines:
        print(line)
    print()
    for c in comparisons:
        print(c.line())


if __name__ == "__main__":
    main()
