"""The processes the benchmark measures: Redis, convq (bin/api, bin/worker) and the bare baseline beside it.

Both services get the same machine, the same Redis (different databases; convq's big arrays go to a bulk Redis
of their own, as `make run` and compose start it),
two worker processes each and gunicorn with the same workers and threads. The floor of a big job
(bench/floor.py) runs on that gunicorn too, with convq's bulk Redis.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil
import requests
from celery import Task

from shared.settings import get_settings
from tests.support import REPO, free_port, stop, wait_until

WORKER_PROCESSES = 2
# Each worker process gets its share of the cores (worker/celery_app.py); in-process baselines use as many threads.
WORKER_THREADS = max(1, (os.cpu_count() or 1) // WORKER_PROCESSES)


def bare_celery(redis_url: str) -> Task:
    """The baseline's Celery task, as a client: `delay().get()` round trips."""
    os.environ["BENCH_REDIS_URL"] = redis_url
    from bench import bare

    return bare.correlate


class Stacks:
    """Start Redis, convq and the baseline on loopback; stop every process on exit; watch their memory."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="convq-bench-"))
        self.processes: dict[str, subprocess.Popen] = {}
        self.peaks: dict[str, float] = {}
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch_memory, daemon=True)
        redis_port, bulk_redis_port, convq_port, bare_port, floor_port = (free_port() for _ in range(5))
        self.convq_url, self.bare_url = f"http://127.0.0.1:{convq_port}", f"http://127.0.0.1:{bare_port}"
        self.floor_url = f"http://127.0.0.1:{floor_port}"
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        self.bulk_redis_url = f"redis://127.0.0.1:{bulk_redis_port}/0"
        self.bulk_redis_port = bulk_redis_port
        self.bare_redis_url = f"redis://127.0.0.1:{redis_port}/1"
        bin_dir = Path(sys.executable).parent
        self.env = os.environ | {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "REDIS_PORT": str(redis_port),
            "REDIS_DIR": str(self.folder / "redis"),
            "REDIS_URL": self.redis_url,
            "BULK_REDIS_URL": self.bulk_redis_url,
            "PORT": str(convq_port),
            "LOG_LEVEL": "WARNING",
            "WORKER_CONCURRENCY": str(WORKER_PROCESSES),
            "SUBMIT_RATE_LIMIT": "1000000/minute",
            "BENCH_REDIS_URL": self.bare_redis_url,
            "BENCH_BULK_REDIS_URL": self.bulk_redis_url,
        }

    def __enter__(self) -> "Stacks":
        try:
            self._start("redis", ["bin/embedded-redis"])
            bulk_redis = {"REDIS_PORT": str(self.bulk_redis_port), "REDIS_DIR": str(self.folder / "bulk-redis")}
            niceness = str(get_settings().big_work_niceness)  # as make run starts it
            self._start("bulk redis", ["nice", "-n", niceness, "bin/embedded-redis"], **bulk_redis)
            self._start("convq api", ["bin/api"])
            self._start("convq worker", ["bin/worker"])
            gunicorn = ["gunicorn", "--workers", "2", "--worker-class", "gthread", "--threads", "64"]
            self._start("bare api", [*gunicorn, "--bind", self.bare_url.removeprefix("http://"), "bench.bare:api"])
            self._start("floor api", [*gunicorn, "--bind", self.floor_url.removeprefix("http://"), "bench.floor:api"])
            bare_worker = ["celery", "--app", "bench.bare", "worker", "--concurrency", str(WORKER_PROCESSES)]
            self._start("bare worker", [*bare_worker, "--queues", "bare", "--loglevel", "WARNING"], OMP_NUM_THREADS="1")
            self._wait_until_ready()
            self._watcher.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_) -> None:
        self._stopping.set()
        for process in reversed(self.processes.values()):
            stop(process, timeout=30)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _start(self, name: str, command: list[str], **env: str) -> None:
        log = open(self.folder / f"{name.replace(' ', '-')}.log", "wb")  # noqa: SIM115 (closed with the process)
        self.processes[name] = subprocess.Popen(command, cwd=REPO, env=self.env | env, stdout=log, stderr=log)

    def _wait_until_ready(self, timeout: float = 60) -> None:
        wait_until(
            self._ready, timeout, f"convq, the bare baseline and the floor (logs in {self.folder})", interval=0.2
        )

    def _ready(self) -> bool:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {self.folder}")
        try:
            ready = requests.get(f"{self.convq_url}/readyz", timeout=2).status_code == 200
            ready = ready and requests.post(f"{self.floor_url}/bytes", data=b"ready?", timeout=2).content == b"ready?"
            return ready and bare_celery(self.bare_redis_url).delay([[1.0]], [[1.0]]).get(timeout=2) == [[1.0]]
        except Exception:  # not up yet: connection refused, timeout
            return False

    def _watch_memory(self) -> None:
        """Note the largest resident memory of any one api and any one worker process of convq, 10 times a second."""
        while not self._stopping.wait(0.1):
            for role in ("convq api", "convq worker"):
                parent = psutil.Process(self.processes[role].pid)
                for process in [parent, *parent.children(recursive=True)]:
                    try:
                        megabytes = process.memory_info().rss / 2**20
                    except psutil.NoSuchProcess:
                        continue
                    self.peaks[role] = max(self.peaks.get(role, 0.0), megabytes)

    def peak_rss_mb(self) -> dict[str, float]:
        return dict(self.peaks)
