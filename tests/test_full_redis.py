"""Redis at its limit, on the stack as `make run` starts it (gunicorn, a Celery worker) over a real redis-server.

A real `maxmemory` (noeviction, as deployed) set just above what Redis uses:
submissions get 507 with Retry-After, /readyz says Redis is full, the worker
survives, and once there is room again every job that was accepted ends with
its right result or a clear error. Jobs whose queue message is gone are sent
again by the workers' reconciler. Short clocks (a 1 s restore sweep, a 6 s
time limit) make redelivery and reconciliation happen within seconds. Beside
the stack, in this process: the worker's run_job at a refusing Redis, and the
reconciler's sweep alone. The Redis here is this module's own (`own_redis_server`),
not the suite's: its maxmemory changes.
"""

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson
import psutil
import pytest
import requests

from api import create_app
from shared.jobstore import JobStore, job_keys_pattern
from shared.logs import redact
from shared.packing import pack_request, pack_result, result_json
from shared.request_models import CorrelationRequest
from shared.settings import Settings
from tests.support import HealthProbe, RedisServer, Stack, finished_job, free_port, wait_until

CLOCKS = {"RESTORE_SWEEP_SECONDS": "1", "JOB_TIME_LIMIT_SECONDS": "6", "REDELIVERY_MARGIN_SECONDS": "1"}
TRAINING = {
    "input": [[float((i * 7 + j * 3) % 11) / 10 for j in range(64)] for i in range(64)],
    "target_kernel": [[1.0, -1.0, 0.5]] * 3,
    "lr": 1e-5,
    "epochs": 6000,  # about 1-2 s on one core of a 2-core machine: still running when Redis fills up
}


# What the worker's log says when it meets a full Redis (printed with -s, for docs/RELIABILITY.md).
WORKER_MET = (
    "Redis refused a write",  # at the start of an attempt: handed back
    "could not record the job's end",  # at its end: tried again, then handed back
    "attempt 1 stopped",  # a training's progress not recorded: failed with store-full
    "Connection to broker lost",  # kombu's bookkeeping (taking or acknowledging a message) refused: restart
    "with no queue message",  # the reconciler sent a job again
    "Unrecoverable error",  # today's main: the worker exits
)


@pytest.fixture(scope="module")
def stack(own_redis_server, tmp_path_factory):
    started = Stack(tmp_path_factory.mktemp("full-redis-stack"), REDIS_URL=own_redis_server.url, **CLOCKS)
    yield started
    started.stop()


@pytest.fixture
def redis(own_redis_server):
    client = own_redis_server.client()
    yield client
    client.config_set("maxmemory", 0)


def settings_of(own_redis_server) -> Settings:
    return Settings(redis_url=own_redis_server.url, **{name.lower(): int(value) for name, value in CLOCKS.items()})


def worker_processes(stack: Stack) -> list[psutil.Process]:
    """The Celery worker's main process (the one `celery worker` started), as bin/run runs it."""
    celeries = [child for child in psutil.Process(stack.process.pid).children(recursive=True) if is_celery(child)]
    return [process for process in celeries if process.ppid() not in {other.pid for other in celeries}]


def is_celery(process: psutil.Process) -> bool:
    try:
        return "celery" in " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return False


def correlation(number: int) -> dict:
    return {"input": [[float(number), 1.0] * 64] * 48, "kernel": [[2.0]]}  # ~20 KB stored: Redis fills fast


def wait_until_finished(stack: Stack, job_id: str, timeout: float) -> dict:
    url = f"{stack.url}/v1/jobs/{job_id}"
    return finished_job(lambda: requests.get(url, timeout=10).json(), timeout, f"job {job_id}")


def test_a_full_redis_answers_507_loses_no_job_and_keeps_the_worker(stack, redis):
    [worker] = worker_processes(stack)
    trainings = [requests.post(f"{stack.url}/v1/kernel-trainings", json=TRAINING, timeout=10) for _ in range(2)]
    assert [response.status_code for response in trainings] == [202, 202]
    training_ids = [response.json()["id"] for response in trainings]
    wait_until(
        lambda: all(
            requests.get(f"{stack.url}/v1/jobs/{job}", timeout=10).json()["progress"]["epoch"] for job in training_ids
        ),
        30,
        "both trainings to record epochs",
    )
    health = HealthProbe(stack.url)
    health.start()

    def submit(number: int) -> requests.Response:
        headers = {"Idempotency-Key": f"full-{number}"}
        return requests.post(f"{stack.url}/v1/correlations", json=correlation(number), headers=headers, timeout=20)

    # Jobs waiting behind the trainings (the worker's two processes are busy)...
    answers = {number: submit(number) for number in range(10)}
    assert {response.status_code for response in answers.values()} == {202}
    # ...when Redis has no room at all for a while: every write the worker tries (taking a message from the
    # queue, starting a job, recording a training's losses, recording a job's end) is refused.
    redis.config_set("maxmemory", 1)
    [ready] = wait_until(  # each API process keeps its verdict for 2 s
        lambda: "full" in (answer := requests.get(f"{stack.url}/readyz", timeout=10)).text and [answer], 5, "readyz"
    )
    assert ready.status_code == 503 and ready.headers["Content-Type"] == "application/problem+json"
    assert "127.0.0.1" not in ready.text
    refused = {number: submit(number) for number in range(10, 15)}
    for path in (f"/v1/jobs/{training_ids[0]}", f"/v1/jobs/{training_ids[0]}/loss", "/v1/jobs"):
        assert requests.get(f"{stack.url}{path}", timeout=10).status_code == 200, path  # reads still work
    time.sleep(4)  # the worker meets the full Redis: its consumer restarts until there is room
    assert worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE
    assert stack.process.poll() is None

    # Then Redis fills up as the submissions come: some are taken, the rest refused.
    redis.config_set("maxmemory", redis.info("memory")["used_memory"] + 1_000_000)
    with ThreadPoolExecutor(8) as pool:
        refused |= dict(zip(range(15, 75), pool.map(submit, range(15, 75)), strict=True))
    answers |= {number: response for number, response in refused.items() if response.status_code == 202}
    refused = {number: response for number, response in refused.items() if response.status_code != 202}
    statuses = sorted({response.status_code for response in refused.values()})
    print(f"\nwith Redis full: {len(answers) - 10} x 202, {len(refused)} refused ({statuses})")
    assert statuses and set(statuses) <= {503, 507}
    for response in refused.values():
        assert response.headers["Content-Type"] == "application/problem+json"
        assert int(response.headers["Retry-After"]) > 0

    redis.config_set("maxmemory", 0)  # room again
    for number in refused:  # the same key again: never a job that cannot run
        retried = submit(number)
        assert retried.status_code == 202, retried.text
        answers[number] = retried
    jobs = {number: response.json()["id"] for number, response in answers.items()}
    assert len(set(jobs.values())) == len(jobs)
    for number, job_id in jobs.items():
        job = wait_until_finished(stack, job_id, 60)
        assert job["status"] == "succeeded", job
        assert job["result"]["output"] == [[2.0 * number, 2.0] * 64] * 48
    for job_id in training_ids:
        job = wait_until_finished(stack, job_id, 60)
        print(f"training {job['status']} on attempt {job['attempts']}: {job['error'] and job['error']['detail']}")
        if job["status"] == "failed":
            assert job["error"]["type"] == "/problems/store-full", job["error"]
        else:
            assert job["status"] == "succeeded" and len(job["result"]["loss_history"]) == TRAINING["epochs"]
    health.stopped.set()
    health.join()
    assert health.answers and all(status == 200 for status, _ in health.answers), health.answers
    print(f"/healthz: {len(health.answers)} answers, slowest {max(seconds for _, seconds in health.answers):.3f} s")
    assert requests.get(f"{stack.url}/readyz", timeout=10).status_code == 200
    assert worker_processes(stack) == [worker]
    log = stack.log.read_text()
    worker_met = {what: log.count(what) for what in WORKER_MET}
    print(f"the worker met the full Redis: {worker_met}")


def test_the_reconciler_sends_again_jobs_whose_message_is_gone(stack, own_redis_server, redis):
    """A job stored but never sent (the API died in between) and a running job whose message was acknowledged."""
    store = JobStore.from_settings(settings_of(own_redis_server))
    redis.config_resetstat()
    request = pack_request(CorrelationRequest.model_validate({"input": [[1.0, 2.0]], "kernel": [[3.0]]}))
    never_sent, _ = store.create("correlation", request, "anonymous")
    acked, _ = store.create("correlation", request, "anonymous")
    assert store.start(acked["id"], "cpu").number == 1  # as a worker would, then its message is gone
    started = time.monotonic()

    for job_id in (never_sent["id"], acked["id"]):
        job = wait_until_finished(stack, job_id, 30)
        assert job["status"] == "succeeded" and job["result"]["output"] == [[3.0, 6.0]]
        print(f"\njob {job_id} finished {time.monotonic() - started:.1f} s later, on attempt {job['attempts']}")
    assert store.get(acked["id"])["attempts"] == 2
    commands = redis.info("commandstats")
    assert "cmdstat_keys" not in commands and "cmdstat_scan" not in commands  # the sweep reads an index


def test_readyz_names_no_address_when_redis_is_down():
    port = free_port()  # nothing listens there
    client = create_app(Settings(redis_url=f"redis://127.0.0.1:{port}/0")).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503 and response.mimetype == "application/problem+json"
    assert str(port) not in response.text and "127.0.0.1" not in response.text
    assert "not reachable" in response.get_json()["detail"]


def test_a_key_sent_in_the_query_is_not_written_to_the_log(stack):
    secret = "s3cret-in-the-query-0042"
    response = requests.get(f"{stack.url}/v1/jobs", params={"api_key": secret, "limit": 1}, timeout=10)
    assert response.status_code == 200
    request_id = response.headers["X-Request-ID"]
    wait_until(lambda: request_id in stack.log.read_text(), 10, "the request's log line")
    assert secret not in stack.log.read_text()
    # gunicorn's own lines (its access lines, when on, carry the query) go through this filter
    line = f'127.0.0.1 - - [30/Nov/2026:10:00:00 +0000] "GET /v1/jobs?limit=1&api_key={secret} HTTP/1.1" 200'
    assert redact(line) == line.replace(secret, "[redacted]")
    assert redact("/v1/jobs?token=a&password=b&limit=1") == "/v1/jobs?token=[redacted]&password=[redacted]&limit=1"


def test_a_job_whose_result_redis_refuses_still_ends_with_it(own_redis_server, redis, monkeypatch):
    """In-process (the worker's own run_job, a real Redis at maxmemory): a big result Redis refuses to SET.

    A result over the job store's inline limit is written with SET before the FINISH script; a full Redis refuses
    that SET, but not FINISH, which takes the result itself then. Before, the error escaped the task, Celery
    acknowledged the message, and the job stayed running with nothing to run it.
    """
    from worker import runner

    store = JobStore.from_settings(settings_of(own_redis_server), patient=True)
    monkeypatch.setattr(runner, "job_store", lambda: store)
    request = pack_request(CorrelationRequest.model_validate({"input": [[1.0]], "kernel": [[1.0]]}))
    job, _ = store.create("correlation", request, "anonymous")

    def compute_then_redis_fills_up(*_) -> bytes:
        redis.config_set("maxmemory", 1)
        output = np.full((1, 20_000), 0.5, np.float32)
        return pack_result({"output": output, "shape": [1, 20_000]}, "lists")  # over the inline limit: SET first

    runner.run_job(job["id"], CorrelationRequest, compute_then_redis_fills_up)
    redis.config_set("maxmemory", 0)
    finished = store.get(job["id"])
    assert finished["status"] == "succeeded"
    assert orjson.loads(result_json(store.result(job["id"])))["shape"] == [1, 20_000]


def test_a_message_that_cannot_be_sent_discards_its_job_whatever_kombu_raises(
    stack, own_redis_server, redis, monkeypatch
):
    """kombu raised AttributeError from a channel an earlier error had closed: the job must not stay queued."""
    app = create_app(settings_of(own_redis_server))
    client, queue = app.test_client(), app.extensions["convq"].queue

    def closed_channel(*_, **__):
        raise AttributeError("'NoneType' object has no attribute 'client'")  # what kombu raised in the attack

    jobs_before = set(redis.keys(job_keys_pattern()))
    monkeypatch.setattr(queue, "send_task", closed_channel)
    body, headers = {"input": [[1.0, 2.0]], "kernel": [[3.0]]}, {"Idempotency-Key": "send-fails"}
    refused = client.post("/v1/correlations", json=body, headers=headers)
    assert refused.status_code == 503 and refused.mimetype == "application/problem+json"
    assert int(refused.headers["Retry-After"]) > 0
    assert set(redis.keys(job_keys_pattern())) == jobs_before  # discarded, key and all
    monkeypatch.undo()

    retried = client.post("/v1/correlations", json=body, headers=headers)
    assert retried.status_code == 202 and "Idempotent-Replayed" not in retried.headers
    job = wait_until_finished(stack, retried.get_json()["id"], 30)
    assert job["status"] == "succeeded" and job["result"]["output"] == [[3.0, 6.0]]


def test_a_job_whose_end_redis_refuses_is_handed_back_not_acknowledged(own_redis_server, redis, monkeypatch):
    """In-process: Redis refuses every write (NOREPLICAS, as while a replica is missing), FINISH included.

    The end is tried again for FINISH_PATIENCE_SECONDS, then the task rejects its message with requeue: Celery puts
    it back in the queue, or, when Redis refuses that too, leaves it unacknowledged until the visibility timeout.
    Either way the message is not acknowledged, and the job, still running, is finished by its next delivery.
    """
    from celery.exceptions import Reject

    from worker import runner

    store = JobStore.from_settings(settings_of(own_redis_server), patient=True)
    monkeypatch.setattr(runner, "job_store", lambda: store)
    monkeypatch.setattr(runner, "FINISH_PATIENCE_SECONDS", 0.5, raising=False)
    request = pack_request(CorrelationRequest.model_validate({"input": [[1.0]], "kernel": [[1.0]]}))
    job, _ = store.create("correlation", request, "anonymous")

    def compute_then_redis_refuses_writes(*_) -> bytes:
        redis.config_set("min-replicas-to-write", 1)
        return pack_result({"output": np.ones((1, 1), np.float32), "shape": [1, 1]}, "lists")

    try:
        with pytest.raises(Reject) as rejected:
            runner.run_job(job["id"], CorrelationRequest, compute_then_redis_refuses_writes)
    finally:
        redis.config_set("min-replicas-to-write", 0)
    assert rejected.value.requeue
    assert store.get(job["id"])["status"] == "running"


def test_a_sweep_requeues_the_due_jobs_with_no_message_and_fails_those_that_keep_losing_it(tmp_path):
    """The reconciler's sweep alone (no worker), on a Redis of its own: what it puts off, sends again and fails."""
    from shared.taskqueue import QUEUE_NAMES, create_celery, messages_in_redis
    from worker.reconciler import sweep

    server = RedisServer(tmp_path).start()
    try:
        settings = Settings(redis_url=server.url, restore_sweep_seconds=1, max_attempts=2)
        store, queue = JobStore.from_settings(settings), create_celery(settings)
        store.message_check_seconds = 0  # every job due at once
        request = pack_request(CorrelationRequest.model_validate({"input": [[1.0]], "kernel": [[1.0]]}))
        waiting = [store.create("correlation", request, "anonymous")[0]["id"] for _ in range(3)]
        for job_id in waiting:
            queue.send_task("convq.correlate", args=[job_id], queue=QUEUE_NAMES["cpu"])
        stranded = [store.create("correlation", request, "anonymous")[0]["id"] for _ in range(2)]

        assert sweep(store, queue, settings) == {"with_message": 3, "undecided": 0, "requeued": 2, "failed": 0}
        messages = messages_in_redis(store.redis, QUEUE_NAMES.values(), 1000)
        assert messages.job_ids == {*waiting, *stranded}  # one message each, no more

        for _ in range(3):  # every message lost again, and again: a third requeue is one too many
            store.redis.delete(QUEUE_NAMES["cpu"])
            sweep(store, queue, settings)
        for job_id in waiting + stranded:
            job = orjson.loads(orjson.dumps(store.get(job_id)))  # as the API shows it (the error is raw JSON)
            assert job["status"] == "failed" and job["error"]["type"] == "/problems/message-lost", job
        assert sweep(store, queue, settings) == {}  # nothing unfinished is left
    finally:
        server.stop()
