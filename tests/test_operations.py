"""Operating convq: readiness as workers come and go, startup checks, metrics and JSON logs."""

import logging
import os
import subprocess
import sys
import time

import pytest

from api import create_app
from shared.settings import Settings
from shared.startup import ConfigurationError, check_settings, warn_about_redis
from tests.support import REPO, RedisServer, Worker, settings_env, wait_for_job, wait_until


@pytest.fixture
def private(tmp_path):
    """A Redis and an API of this test's own, so stopping their worker disturbs no other test."""
    redis = RedisServer(tmp_path).start()
    settings = Settings(redis_url=redis.url)
    yield settings, create_app(settings).test_client()
    redis.stop()


def test_readiness_follows_the_worker_and_redis(private, tmp_path):
    settings, client = private
    started = time.monotonic()
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503 and "no worker answered" in not_ready.get_json()["detail"]
    assert time.monotonic() - started >= 1  # the ping waited its 1 s for an answer...
    started = time.monotonic()
    assert client.get("/readyz").status_code == 503
    assert time.monotonic() - started < 0.5  # ...the next probe got the cached verdict

    worker = Worker(settings, tmp_path / "worker.log", "readiness", concurrency=1).start()
    ready = wait_until(lambda: (r := client.get("/readyz")).status_code == 200 and r, 10, "ready")
    assert ready.get_json() == {"status": "ready", "redis": "ok", "workers": 1}

    worker.stop()
    gone = wait_until(lambda: (r := client.get("/readyz")).status_code == 503 and r, 10, "not ready")
    assert gone.mimetype == "application/problem+json" and gone.headers["Retry-After"]

    worker.start()
    wait_until(lambda: client.get("/readyz").status_code == 200, 10, "ready again")
    worker.stop()


def test_readiness_names_a_missing_bulk_redis(private):
    settings, _ = private
    client = create_app(settings.model_copy(update={"bulk_redis_url": "redis://127.0.0.1:1/0"})).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503 and response.get_json()["detail"].startswith("the bulk Redis")


def test_readiness_names_a_missing_redis(tmp_path):
    client = create_app(Settings(redis_url="redis://127.0.0.1:1/0")).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503 and response.get_json()["detail"].startswith("Redis is not reachable")


@pytest.mark.parametrize(
    "changes,complaint",
    [
        ({"environment": "production", "redis_url": "redis://redis:6379/0"}, "REDIS_URL has no password"),
        ({"torch_device": "cuda", "worker_concurrency": 2}, "TORCH_DEVICE=cuda needs WORKER_CONCURRENCY=1"),
        ({"job_time_limit_seconds": 1}, "JOB_TIME_LIMIT_SECONDS must be at least 2"),
        ({"redis_sentinels": "s:26379", "replica_wait_seconds": 0.5}, "REPLICA_WAIT_SECONDS must be below"),
    ],
)
def test_inconsistent_or_unsafe_settings_are_refused(changes, complaint):
    with pytest.raises(ConfigurationError, match=complaint):
        check_settings(Settings(**changes))
    check_settings(Settings(environment="production", redis_url="redis://:secret@redis:6379/0"))


@pytest.mark.parametrize(
    "command",
    [["-c", "import api; api.create_app()"], ["-m", "celery", "--app", "worker.celery_app", "worker"]],
    ids=["api", "worker"],
)
def test_api_and_worker_refuse_to_start_with_a_clear_message(command):
    env = os.environ | {"ENVIRONMENT": "production", "REDIS_URL": "redis://127.0.0.1:6399/0"}
    run = subprocess.run([sys.executable, *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "convq cannot start: REDIS_URL has no password" in run.stderr


def test_a_redis_without_aof_is_warned_about(redis_server, caplog):
    with caplog.at_level(logging.WARNING, logger="shared.startup"):
        warn_about_redis(redis_server.client())
    assert "Redis runs without appendonly" in caplog.text  # the suite's Redis keeps nothing on disk
    assert "maxmemory-policy" not in caplog.text  # it does not evict


def test_a_redis_that_may_evict_is_warned_about(tmp_path, caplog):
    redis = RedisServer(tmp_path, append_only=True).start()
    try:
        redis.client().config_set("maxmemory-policy", "allkeys-lru")
        with caplog.at_level(logging.WARNING, logger="shared.startup"):
            warn_about_redis(redis.client())
    finally:
        redis.stop()
    assert "maxmemory-policy is allkeys-lru" in caplog.text and "appendonly" not in caplog.text


def test_the_test_settings_reach_worker_processes_intact(settings, monkeypatch):
    for name, value in settings_env(settings.model_copy(update={"api_keys": {"a": "b"}})).items():
        monkeypatch.setenv(name, value)
    assert Settings() == settings.model_copy(update={"api_keys": {"a": "b"}})


def test_job_metrics_count_what_the_jobs_did(client, worker):
    before = scrape(client)
    job = client.post("/v1/kernel-trainings", json={"input": [[1, 0, 1]], "target_kernel": [[1]], "epochs": 7})
    wait_for_job(client, job.get_json()["id"])
    after = scrape(client)
    training = '{kind="kernel_training"}'
    assert delta(before, after, f"convq_jobs_submitted_total{training}") == 1
    assert delta(before, after, 'convq_jobs_finished_total{kind="kernel_training",status="succeeded"}') == 1
    assert delta(before, after, "convq_epochs_run_total") == 7
    assert delta(before, after, f"convq_job_run_seconds_count{training}") == 1
    assert {'convq_queue_length{queue="cpu"}', 'convq_queue_length{queue="gpu"}'} <= after.keys()
    assert after["convq_job_store_up"] == 1


def scrape(client) -> dict[str, float]:
    """GET /metrics as {series: value}."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    return parse_metrics(response.get_data(as_text=True))


def parse_metrics(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line and line[0] != "#"
    }


def delta(before: dict[str, float], after: dict[str, float], series: str) -> float:
    return after[series] - before.get(series, 0.0)
