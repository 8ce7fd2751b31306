"""A rolling upgrade from the previous release: its jobs, in every state, are run, read and expired by this one.

The previous release (PREVIOUS_RELEASE: main before the stored format changed to raw arrays, issue 17) runs
from a git worktree of that commit, with this checkout's virtual environment, against the same real
redis-server: its API (gunicorn) and its worker (celery). It leaves jobs finished (a correlation, a training,
a failure), running (a training handed back by its worker's SIGTERM) and queued; this release's worker and
API then take over. Meanwhile a job of this release waits beside the previous release's worker, which must not
touch it (it reads neither its queue nor its format), and the previous release's API must read it without harm.
"""

import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

from api import create_app
from services import corr2d
from shared.jobstore import job_keys_pattern
from shared.settings import Settings
from shared.taskqueue import create_celery
from tests.support import REPO, RedisServer, Worker, finished_job, free_port, settings_env, stop, wait_until

# main's last commit before this release's stored format (raw arrays beside a JSON skeleton, new queues).
PREVIOUS_RELEASE = "bb41d3dc73f77007ba8cbd84334be0a95db1446b"
UPGRADE_SETTINGS = {
    "job_time_limit_seconds": 30,
    "redelivery_margin_seconds": 2,
    "restore_sweep_seconds": 1,
    "shutdown_grace_seconds": 1,
    "max_epochs": 100_000,
}
X = torch.rand((150, 150), generator=torch.Generator().manual_seed(0))  # its request and result are over 64 KiB
K = torch.tensor([[1.0, -1.0, 0.5]] * 3)
CORRELATION = {"input": X.tolist(), "kernel": K.tolist()}
TRAINING = {"input": X[:40, :40].tolist(), "target_kernel": K.tolist(), "lr": 1e-4, "epochs": 50}
LONG_TRAINING = TRAINING | {"epochs": 40_000}  # ~5 s of work here (10,000 took 1.2 s: within the 1 s grace)


@pytest.fixture
def previous_release(tmp_path) -> Iterator[Path]:
    """A worktree of the previous release, removed afterwards."""
    found = subprocess.run(["git", "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"], cwd=REPO)
    assert found.returncode == 0, f"the previous release {PREVIOUS_RELEASE} is not in this clone's history"
    tree = tmp_path / "previous"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), PREVIOUS_RELEASE], cwd=REPO, check=True)
    try:
        yield tree
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False)
        subprocess.run(["git", "worktree", "prune"], cwd=REPO, check=False)


def previous_env(tree: Path, settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a process of the previous release: its code first on the path, this venv's packages."""
    return (
        os.environ
        | settings_env(settings)
        | {"PYTHONPATH": str(tree), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "LOG_LEVEL": "INFO"}
        | extra
    )


@contextmanager
def started(command: list[str], tree: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with open(log, "ab") as output:
        process = subprocess.Popen(command, cwd=tree, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        stop(process, timeout=30)


def old_worker_answers(settings: Settings, process: subprocess.Popen) -> bool:
    assert process.poll() is None, "the previous release's worker exited"
    return any("previous@" in next(iter(reply)) for reply in create_celery(settings).control.ping(timeout=0.5))


def test_jobs_of_the_previous_release_in_every_state_are_run_and_read_and_it_leaves_new_ones_alone(
    previous_release, tmp_path
):
    redis = RedisServer(tmp_path, append_only=True).start()
    try:
        _upgrade(previous_release, tmp_path, redis)
    finally:
        redis.stop()


def _upgrade(previous_release: Path, tmp_path: Path, redis: RedisServer) -> None:
    settings = Settings(redis_url=redis.url, **UPGRADE_SETTINGS)
    old_url = f"http://127.0.0.1:{free_port()}"
    where = subprocess.run(
        [sys.executable, "-c", "import shared.taskqueue as t; print(t.__file__)"],
        cwd=previous_release,
        env=previous_env(previous_release, settings),
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(previous_release)), where.stdout  # the old code, not this checkout's
    old_api_env = previous_env(previous_release, settings, PORT=old_url.rsplit(":", 1)[1], HOST="127.0.0.1")
    worker_env = previous_env(previous_release, settings, WORKER_CONCURRENCY="1", TORCH_DEVICE="cpu")
    worker_command = ["bin/worker", "--hostname", "previous@%h", "--without-mingle", "--without-gossip"]
    new_api = create_app(settings).test_client()
    new_worker = Worker(settings, tmp_path / "new-worker.log", "new", concurrency=1)
    try:
        with started(["bin/api"], previous_release, old_api_env, tmp_path / "old-api.log"):
            old = requests.Session()
            wait_until(lambda: _answers(old, old_url), 60, "the previous release's API", interval=0.5)

            def submit_old(path: str, body: dict) -> str:
                response = old.post(f"{old_url}{path}", json=body, timeout=30)
                assert response.status_code == 202, response.text
                return response.json()["id"]

            def old_job(job_id: str) -> dict:
                return old.get(f"{old_url}/v1/jobs/{job_id}", timeout=30).json()

            with started(worker_command, previous_release, worker_env, tmp_path / "old-worker.log") as old_worker:
                wait_until(lambda: old_worker_answers(settings, old_worker), 90, "the old worker", interval=0.5)
                finished = {
                    "correlation": submit_old("/v1/correlations", CORRELATION),
                    "training": submit_old("/v1/kernel-trainings", TRAINING),
                    "failure": submit_old("/v1/correlations", {"input": [[3e38, 3e38]], "kernel": [[3e38]]}),
                }
                for job_id in finished.values():
                    finished_job(lambda job_id=job_id: old_job(job_id), 60)
                running = submit_old("/v1/kernel-trainings", LONG_TRAINING)
                wait_until(lambda: old_job(running)["progress"]["epoch"] > 0, 60, "the long training to run")
                # A job of this release, beside the previous release's worker: it waits for a worker of its own.
                new_waiting = new_api.post("/v1/correlations", json=CORRELATION).get_json()["id"]
                old_worker.send_signal(signal.SIGTERM)  # hands the long training back to the queue
                old_worker.wait(30)
            assert new_api.get(f"/v1/jobs/{new_waiting}").get_json()["attempts"] == 0
            assert old_job(running)["status"] == "running"
            queued = {
                "correlation": submit_old("/v1/correlations", CORRELATION),
                "training": submit_old("/v1/kernel-trainings", TRAINING),
            }

            new_worker.start()
            for job_id in [running, new_waiting, *queued.values()]:
                finished_job(lambda job_id=job_id: new_api.get(f"/v1/jobs/{job_id}").get_json(), 90)
            # The previous release's API reads a job of this release without harm: valid JSON, its status.
            seen_by_old = old_job(new_waiting)
            assert seen_by_old["status"] == "succeeded" and seen_by_old["result"] is None
    finally:
        new_worker.stop()

    expected = corr2d(X, K).numpy()
    for job_id in (finished["correlation"], queued["correlation"], new_waiting):
        job = new_api.get(f"/v1/jobs/{job_id}").get_json()
        assert job["status"] == "succeeded" and job["attempts"] == 1, job
        assert np.allclose(job["result"]["output"], expected, rtol=1e-5, atol=1e-5)
        npy = new_api.get(f"/v1/jobs/{job_id}/output.npy")
        assert np.allclose(np.load(io.BytesIO(npy.get_data())), expected, rtol=1e-5, atol=1e-5)
        assert new_api.get(f"/v1/jobs/{job_id}/output.png").status_code == 200  # the request's shapes, either format
    for job_id, epochs in ((finished["training"], 50), (queued["training"], 50), (running, LONG_TRAINING["epochs"])):
        job = new_api.get(f"/v1/jobs/{job_id}").get_json()
        assert job["status"] == "succeeded" and len(job["result"]["loss_history"]) == epochs, job["error"]
        page = new_api.get(f"/v1/jobs/{job_id}/loss").get_json()
        assert page["losses"] == job["result"]["loss_history"]
        assert new_api.get(f"/v1/jobs/{job_id}/kernel.npy").status_code == 200
    assert new_api.get(f"/v1/jobs/{running}").get_json()["attempts"] == 2  # begun by the old, ended by the new
    failure = new_api.get(f"/v1/jobs/{finished['failure']}").get_json()
    assert failure["status"] == "failed" and failure["error"]["title"] == "Output not finite"

    client = redis.client()
    keys = list(client.scan_iter(job_keys_pattern(), count=1000))
    assert keys and all(client.ttl(key) > 0 for key in keys)  # every job's keys expire, whichever release wrote them


def _answers(http: requests.Session, url: str) -> bool:
    try:
        return http.get(f"{url}/healthz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False
