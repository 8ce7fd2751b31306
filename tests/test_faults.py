"""No job lost, none run twice to effect: workers and Redis killed under real jobs.

Each test gets its own redis-server (append-only, as deployed) and its own
worker processes, with short time limits so that redelivery happens in
seconds: the same code paths as production, on a smaller clock.
"""

import signal
import time
from types import SimpleNamespace

import psutil
import pytest
import torch

from api import create_app
from services import corr2d, learn_kernel
from shared.settings import Settings
from shared.taskqueue import QUEUE_NAMES
from tests.support import RedisServer, Worker, wait_for_job, wait_until
from tests.workers.crash_on_seed import CRASH_SEED

FAULT_SETTINGS = {
    "job_time_limit_seconds": 10,
    "redelivery_margin_seconds": 2,
    "restore_sweep_seconds": 1,
    "max_attempts": 3,
    "shutdown_grace_seconds": 1,
    "max_epochs": 100_000,
}
EPOCHS = 2000  # about 0.4 s of training (measured): long enough to kill a worker in the middle of it
X = torch.rand((64, 64), generator=torch.Generator().manual_seed(0))
K = torch.tensor([[1.0, -1.0, 0.5]] * 3)
TRAINING = {"input": X.tolist(), "target_kernel": K.tolist(), "lr": 1e-4, "epochs": EPOCHS}


@pytest.fixture
def cluster(tmp_path):
    """A private Redis (AOF on), the API over it, and a way to start workers; all stopped afterwards."""
    redis = RedisServer(tmp_path, append_only=True).start()
    settings = Settings(redis_url=redis.url, **FAULT_SETTINGS)
    workers: list[Worker] = []

    def start_worker(name: str, app: str | None = None) -> Worker:
        worker = Worker(settings, tmp_path / f"{name}.log", name, concurrency=1, app=app).start()
        workers.append(worker)
        return worker

    yield SimpleNamespace(
        redis=redis, settings=settings, client=create_app(settings).test_client(), start_worker=start_worker
    )
    for worker in workers:
        worker.stop()
    redis.stop()


def submit(client, path: str, body: dict) -> str:
    response = client.post(path, json=body)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def wait_for_epochs(client, job_id: str, epochs: int) -> None:
    wait_until(lambda: client.get(f"/v1/jobs/{job_id}/loss").get_json()["epochs_done"] >= epochs, 30, "epochs")


def pool_children(worker: Worker) -> list[psutil.Process]:
    return psutil.Process(worker.process.pid).children(recursive=True)


def assert_one_loss_per_epoch(client, job: dict) -> None:
    """The history has exactly one loss per epoch, equal to an uninterrupted run's."""
    assert job["status"] == "succeeded", job
    history = job["result"]["loss_history"]
    page = client.get(f"/v1/jobs/{job['id']}/loss").get_json()
    assert page["epochs_done"] == len(page["losses"]) == len(history) == EPOCHS
    assert page["losses"] == history
    expected = learn_kernel(X, corr2d(X, K), (3, 3), lr=1e-4, epochs=EPOCHS).losses
    assert history == pytest.approx(expected, rel=1e-4)


def test_sigkill_of_the_pool_child_mid_training_reruns_the_job_once(cluster):
    worker = cluster.start_worker("child-killed")
    job_id = submit(cluster.client, "/v1/kernel-trainings", TRAINING)
    wait_for_epochs(cluster.client, job_id, 50)
    [child] = pool_children(worker)
    child.send_signal(signal.SIGKILL)

    job = wait_for_job(cluster.client, job_id, timeout=60)
    assert job["attempts"] == 2
    assert_one_loss_per_epoch(cluster.client, job)


def test_without_redelivery_the_same_kill_loses_the_job(cluster):
    """Negative control: with task_reject_on_worker_lost off, Celery acks the lost message and the job never ends."""
    worker = cluster.start_worker("no-redelivery", app="tests.workers.without_redelivery")
    job_id = submit(cluster.client, "/v1/kernel-trainings", TRAINING)
    wait_for_epochs(cluster.client, job_id, 50)
    [child] = pool_children(worker)
    child.send_signal(signal.SIGKILL)

    redis = cluster.redis.client()
    acked = lambda: redis.hlen("unacked") == 0 and redis.llen(QUEUE_NAMES["cpu"]) == 0  # noqa: E731
    wait_until(acked, 30, "the message to be acked")
    time.sleep(2)
    job = cluster.client.get(f"/v1/jobs/{job_id}").get_json()
    assert job["status"] == "running" and job["attempts"] == 1  # stuck: nothing will ever run it again


def test_sigkill_of_the_whole_worker_is_redelivered_within_the_documented_bound(cluster):
    first = cluster.start_worker("doomed")
    job_id = submit(cluster.client, "/v1/kernel-trainings", TRAINING)
    wait_for_epochs(cluster.client, job_id, 50)
    for process in [psutil.Process(first.process.pid), *pool_children(first)]:
        process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    first.process.wait()

    cluster.start_worker("successor")
    bound = cluster.settings.redelivery_bound_seconds
    job = wait_for_job(cluster.client, job_id, timeout=bound + 30)
    waited = time.monotonic() - killed_at
    print(f"\nwhole worker SIGKILLed: the job completed {waited:.1f} s later (bound: {bound} s + the run)")
    assert job["attempts"] == 2
    assert_one_loss_per_epoch(cluster.client, job)
    assert waited < bound + 15


def test_a_job_that_kills_its_worker_every_time_fails_after_max_attempts(cluster):
    cluster.start_worker("crashy", app="tests.workers.crash_on_seed")
    poison = submit(cluster.client, "/v1/kernel-trainings", {**TRAINING, "seed": CRASH_SEED, "epochs": 5})
    job = wait_for_job(cluster.client, poison, timeout=60)
    assert job["status"] == "failed" and job["result"] is None
    assert job["error"]["title"] == "Worker lost"
    assert f"started {FAULT_SETTINGS['max_attempts']} times" in job["error"]["detail"]

    healthy = wait_for_job(
        cluster.client, submit(cluster.client, "/v1/correlations", {"input": [[1, 2]], "kernel": [[3]]})
    )
    assert healthy["status"] == "succeeded" and healthy["result"]["output"] == [[3.0, 6.0]]


def test_redis_kill_9_and_restart_loses_no_queued_or_running_job(cluster):
    worker = cluster.start_worker("survivor")
    training = submit(cluster.client, "/v1/kernel-trainings", TRAINING)
    wait_for_epochs(cluster.client, training, 50)
    queued = [
        submit(cluster.client, "/v1/correlations", {"input": [[float(i), 1.0]], "kernel": [[2.0]]}) for i in range(20)
    ]
    assert cluster.client.get(f"/v1/jobs/{queued[-1]}").get_json()["status"] == "queued"
    time.sleep(1.5)  # appendfsync everysec: what was written a second ago is on disk

    cluster.redis.kill()
    cluster.redis.start()  # same port, same directory: replays the append-only file

    bound = cluster.settings.redelivery_bound_seconds + 60
    for i, job_id in enumerate(queued):
        job = wait_for_job(cluster.client, job_id, timeout=bound)
        assert job["status"] == "succeeded" and job["result"]["output"] == [[2.0 * i, 2.0]]
    finished = wait_for_job(cluster.client, training, timeout=bound)
    print(f"\nRedis kill -9: the running training finished on attempt {finished['attempts']}")
    assert_one_loss_per_epoch(cluster.client, finished)
    assert worker.process.poll() is None  # the worker reconnected by itself


def test_sigterm_hands_a_running_job_back_at_once(cluster):
    first = cluster.start_worker("leaving")
    # ~4 s of training: still running when the 1 s grace is over (6,000 epochs could finish within it)
    job_id = submit(cluster.client, "/v1/kernel-trainings", {**TRAINING, "epochs": EPOCHS * 10})
    wait_for_epochs(cluster.client, job_id, 50)
    first.process.send_signal(signal.SIGTERM)
    first.process.wait(30)  # the grace (1 s here) passes, the job goes back to the queue, the worker exits

    redis = cluster.redis.client()
    assert redis.llen(QUEUE_NAMES["cpu"]) == 1  # back in the queue now, not after the visibility timeout
    cluster.start_worker("next")
    job = wait_for_job(cluster.client, job_id, timeout=60)
    assert job["status"] == "succeeded" and job["attempts"] == 2
    assert len(job["result"]["loss_history"]) == EPOCHS * 10


def test_redis_down_or_hung_gives_fast_503s_and_the_same_api_recovers(cluster):
    client = cluster.client
    job_id = submit(client, "/v1/correlations", {"input": [[1]], "kernel": [[1]]})
    cluster.redis.stop()
    for method, path, body in [
        ("post", "/v1/correlations", {"input": [[1]], "kernel": [[1]]}),
        ("get", f"/v1/jobs/{job_id}", None),
    ]:
        started = time.monotonic()
        response = getattr(client, method)(path, json=body)
        elapsed = time.monotonic() - started
        assert response.status_code == 503 and response.mimetype == "application/problem+json"
        assert int(response.headers["Retry-After"]) > 0
        assert elapsed < 2, f"{method.upper()} took {elapsed:.2f} s with Redis down"

    cluster.redis.start()
    cluster.redis.process.send_signal(signal.SIGSTOP)  # a hung Redis: connections open, no answers
    started = time.monotonic()
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 503 and time.monotonic() - started < 2
    cluster.redis.process.send_signal(signal.SIGCONT)
    restarted = time.monotonic()
    wait_until(lambda: client.get(f"/v1/jobs/{job_id}").status_code == 200, 5, "the API to serve again")
    print(f"\nAPI served again {time.monotonic() - restarted:.2f} s after Redis restarted")
    assert client.post("/v1/correlations", json={"input": [[1]], "kernel": [[1]]}).status_code == 202
