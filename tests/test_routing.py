"""Queues by device: big jobs go to GPU workers and tiny ones stay on CPU workers; each job says where it ran.

CI has no GPU, so the "GPU worker" here is a worker on the CPU that takes jobs from the gpu queue: the
routing is what is tested; scripts/gpu_check.py checks CUDA's numbers where a GPU exists.
"""

import subprocess
import sys

import pytest
import torch

from api import create_app
from shared.settings import Settings
from shared.taskqueue import QUEUE_NAMES
from tests.support import REPO, Worker, wait_for_job

TINY = {"input": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]], "kernel": [[0.0, 1.0], [2.0, 3.0]]}  # work 16
BIG = {"input": [[1.0] * 40] * 40, "kernel": [[1.0] * 5] * 5}  # 36 x 36 outputs x 25 taps: work 32,400


@pytest.fixture(scope="module")
def redis(own_redis_server):
    """Its own Redis: the suite's worker would drain the cpu queue that these tests count."""
    return own_redis_server


@pytest.fixture(scope="module")
def routing_settings(redis) -> Settings:
    return Settings(redis_url=redis.url, gpu_queue=True, gpu_min_work=10_000)


def queued(redis) -> dict[str, int]:
    client = redis.client()
    return {device: client.llen(name) for device, name in QUEUE_NAMES.items()}


def submit(client, body: dict) -> dict:
    response = client.post("/v1/correlations", json=body)
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def test_auto_sends_big_jobs_to_the_gpu_queue_and_tiny_ones_to_the_cpu_queue(redis, routing_settings):
    client = create_app(routing_settings).test_client()
    before = queued(redis)
    tiny, big = submit(client, TINY), submit(client, BIG)
    assert (tiny["queue"], big["queue"]) == ("cpu", "gpu") and tiny["device"] is None
    assert queued(redis) == {"cpu": before["cpu"] + 1, "gpu": before["gpu"] + 1}
    forced = [submit(client, TINY | {"device": "gpu"}), submit(client, BIG | {"device": "cpu"})]
    assert [job["queue"] for job in forced] == ["gpu", "cpu"]


def test_each_queue_is_served_by_its_own_workers_and_the_job_records_its_device(redis, routing_settings, tmp_path):
    client = create_app(routing_settings).test_client()
    tiny, big = submit(client, TINY), submit(client, BIG)
    gpu_worker = Worker(
        routing_settings.model_copy(update={"worker_queues": "gpu"}), tmp_path / "gpu.log", "gpu"
    ).start()
    try:
        finished = wait_for_job(client, big["id"])
        assert finished["status"] == "succeeded" and finished["device"] == "cpu"  # TORCH_DEVICE=cpu in tests
        assert client.get(f"/v1/jobs/{tiny['id']}").get_json()["status"] == "queued"  # no CPU worker yet
        cpu_worker = Worker(routing_settings, tmp_path / "cpu.log", "cpu").start()
        try:
            assert wait_for_job(client, tiny["id"])["status"] == "succeeded"
        finally:
            cpu_worker.stop()
    finally:
        gpu_worker.stop()
    assert queued(redis) == {"cpu": 0, "gpu": 0}


def test_asking_for_a_gpu_where_there_is_no_gpu_queue_is_refused_at_the_field(redis, routing_settings):
    client = create_app(routing_settings.model_copy(update={"gpu_queue": False})).test_client()
    before = queued(redis)
    response = client.post("/v1/correlations", json=TINY | {"device": "gpu"})
    assert response.status_code == 422 and response.get_json()["errors"][0]["loc"] == "/device"
    assert submit(client, BIG)["queue"] == "cpu"  # auto: everything on CPU workers
    assert queued(redis)["gpu"] == before["gpu"]


def test_the_gpu_check_script_compares_cuda_with_the_cpu_or_says_there_is_no_gpu():
    checked = subprocess.run([sys.executable, "-m", "scripts.gpu_check"], cwd=REPO, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    if torch.cuda.is_available():
        assert checked.stdout.count("ok ") == 7 and "FAIL" not in checked.stdout
    else:
        assert checked.stdout.startswith("no GPU")
