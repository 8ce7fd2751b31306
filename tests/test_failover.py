"""Lose the Redis primary under load, lose nothing: a real Sentinel failover beneath the stack as `make run` starts it.

Real redis-server processes on loopback (tests/replication.py): a primary, two replicas and three sentinels,
password-protected, `min-replicas-to-write 1` everywhere. The stack (bin/run: gunicorn and a Celery worker) finds
the primary through the sentinels. Two replicas, not one: with `min-replicas-to-write 1`, the replica promoted
in place of a lone primary would have no replica left and refuse every write until the old primary returned.

200 jobs are accepted (tiny correlations, 256 x 256 correlations, trainings), the primary is killed with
SIGKILL while they run, and submissions go on throughout. Every accepted job must end `succeeded` with the
right result (numpy's), each training with exactly one loss per epoch; a submission is either accepted (202)
or refused with 503 and Retry-After, never a 500; /healthz answers throughout. Then the old primary is
started again: it comes back as a replica and holds every job. The figures (failover time, how long
submissions were refused, what WAIT costs) are printed for docs/RELIABILITY.md (run with -s).

Beside it, on the same servers: a command in flight at the kill goes on at the new primary; replicas that stop
answering (SIGSTOP) make a submission 503 and a worker's start or end unconfirmed; a primary short of replicas
(NOREPLICAS) refuses with 503; the rate limiter counts at the primary; WAIT's cost, side by side.
"""

import contextlib
import logging
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson
import pytest
import requests
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from api import create_app
from shared.jobstore import (
    INLINE_BYTES,
    PATIENT_RETRY,
    JobKeys,
    JobStore,
    NotReplicated,
    attempt_result_key_for,
    job_keys_pattern,
)
from shared.packing import Packed, pack_request, pack_result
from shared.redis_clients import connect
from shared.request_models import CorrelationRequest, KernelTrainingRequest, Request
from shared.settings import Settings
from shared.startup import warn_about_redis
from tests.replication import PASSWORD, SENTINEL_PASSWORD, ReplicatedRedis
from tests.support import HealthProbe, Stack, finished_job, wait_until


def packed(model: type[Request], body: dict) -> Packed:
    """A request as the API stores it."""
    return pack_request(model.model_validate(body))


CLOCKS = {"RESTORE_SWEEP_SECONDS": "1", "JOB_TIME_LIMIT_SECONDS": "20", "REDELIVERY_MARGIN_SECONDS": "1"}
REDIS_URL = f"redis://:{PASSWORD}@127.0.0.1:6379/0"  # with sentinels, only its password and database count
RNG = np.random.default_rng(18)
BIG = RNG.random((256, 256), dtype=np.float32).round(3)
KERNEL = np.array([[1.0, -1.0, 0.5]] * 3, dtype=np.float32)
EPOCHS = 4000  # about a second of training on a busy core: running when the primary dies
TRAINING = {"input": BIG[:64, :64].tolist(), "target_kernel": KERNEL.tolist(), "lr": 1e-4, "epochs": EPOCHS}
TINY, LARGE, TRAININGS = 170, 20, 10


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    started = ReplicatedRedis(shutil.which("redis-server"), tmp_path_factory.mktemp("replicated")).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def settings(replicated) -> Settings:
    return Settings(
        redis_url=REDIS_URL, redis_sentinels=replicated.addresses, redis_sentinel_password=SENTINEL_PASSWORD
    )


@pytest.fixture(scope="module")
def stack(replicated, tmp_path_factory):
    env = {"REDIS_URL": REDIS_URL, "REDIS_SENTINELS": replicated.addresses}
    started = Stack(
        tmp_path_factory.mktemp("failover-stack"), REDIS_SENTINEL_PASSWORD=SENTINEL_PASSWORD, **env, **CLOCKS
    )
    yield started
    started.stop()


def tiny(number: int) -> dict:
    return {"input": [[float(number), 1.0]], "kernel": [[2.0]]}


def correlate(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The valid cross-correlation, numpy's way: the oracle for every correlation here."""
    windows = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), k.shape)
    return np.einsum("ijkl,kl->ij", windows, k.astype(np.float64))


class Submitter(threading.Thread):
    """POST a tiny correlation every 50 ms until stopped; keep each answer's time, status and Retry-After."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.answers, self.stopped = url, [], threading.Event()

    def run(self) -> None:
        number = 10_000
        while not self.stopped.wait(0.05):
            number += 1
            try:
                response = requests.post(f"{self.url}/v1/correlations", json=tiny(number), timeout=10)
                answer = (response.status_code, response.headers.get("Retry-After"), response.json())
            except requests.RequestException as error:
                answer = (repr(error), None, None)
            self.answers.append((time.monotonic(), number, *answer))


def test_killing_the_primary_under_load_loses_no_job_and_refuses_only_with_503(stack, replicated):
    url = stack.url
    bodies = {("training", i): TRAINING for i in range(TRAININGS)}
    bodies |= {("large", i): {"input": BIG.tolist(), "kernel": KERNEL.tolist()} for i in range(LARGE)}
    bodies |= {("tiny", i): tiny(i) for i in range(TINY)}

    def submit(item) -> tuple:
        (kind, _), body = item
        path = "/v1/kernel-trainings" if kind == "training" else "/v1/correlations"
        return item[0], requests.post(f"{url}{path}", json=body, timeout=30)

    with ThreadPoolExecutor(8) as pool:
        answers = dict(pool.map(submit, bodies.items()))
    assert {response.status_code for response in answers.values()} == {202}
    jobs = {name: response.json()["id"] for name, response in answers.items()}
    wait_until(
        lambda: requests.get(f"{url}/v1/jobs/{jobs['training', 0]}", timeout=10).json()["progress"]["epoch"],
        30,
        "the first training to run",
    )

    health, submitter = HealthProbe(url), Submitter(url)
    health.start()
    submitter.start()
    time.sleep(0.5)
    old = replicated.primary()
    old.kill()
    killed_at = time.monotonic()
    wait_until(lambda: replicated.sentinels[0].primary_port() not in (None, old.port), 30, "a new primary")
    promoted_at = time.monotonic()
    wait_until(
        lambda: any(status == 202 and at > promoted_at for at, _, status, *_ in submitter.answers),
        30,
        "a submission accepted by the new primary",
    )
    time.sleep(2)
    submitter.stopped.set()
    submitter.join()

    refused = [answer for answer in submitter.answers if answer[2] != 202]
    assert all(status == 503 and retry_after for _, _, status, retry_after, _ in refused), refused
    assert all(body["type"] == "/problems/unavailable" for *_, body in refused)
    accepted = {("during", number): body["id"] for _, number, status, _, body in submitter.answers if status == 202}
    jobs |= accepted

    finished = {
        name: finished_job(lambda job_id=job_id: requests.get(f"{url}/v1/jobs/{job_id}", timeout=10).json(), 120)
        for name, job_id in jobs.items()
    }
    health.stopped.set()
    health.join()
    for (kind, number), job in finished.items():
        assert job["status"] == "succeeded", (kind, number, job["error"], job["progress"], job["attempts"])
        if kind in ("tiny", "during"):
            assert job["result"]["output"] == [[2.0 * number, 2.0]]
        elif kind == "large":
            np.testing.assert_allclose(job["result"]["output"], correlate(BIG, KERNEL), rtol=1e-4, atol=1e-3)
        else:
            page = requests.get(f"{url}/v1/jobs/{job['id']}/loss", timeout=10).json()
            assert page["epochs_done"] == len(page["losses"]) == len(job["result"]["loss_history"]) == EPOCHS
            assert page["losses"] == job["result"]["loss_history"]
    histories = [finished["training", i]["result"]["loss_history"] for i in range(TRAININGS)]
    assert all(history == histories[0] for history in histories)  # same request, same losses, failover or not
    assert health.answers and all(status == 200 for status, _ in health.answers), health.answers

    # The old primary comes back as a replica of the new one, and holds every job as it ended.
    old.start()
    wait_until(lambda: old.role().get("master_link_status") == "up", 30, "the old primary to rejoin as a replica")
    assert old.role()["role"] == "slave"
    new = replicated.primary()
    wait_until(lambda: old.role()["slave_repl_offset"] >= new.role()["master_repl_offset"], 10, "it to catch up")
    client = old.client()
    assert all(client.hget(JobKeys.of(job_id).record, "status") == b"succeeded" for job_id in jobs.values())

    window = [at - killed_at for at, *_ in refused]
    print(
        f"\nfailover: SIGKILL to a new primary named by the sentinels {promoted_at - killed_at:.1f} s "
        f"(down-after-milliseconds 2000); submissions refused with 503 for "
        f"{(max(window) - min(window)) if window else 0:.1f} s ({len(refused)} of {len(submitter.answers)}, "
        f"from {min(window, default=0):.1f} s to {max(window, default=0):.1f} s after the kill); "
        f"{len(jobs)} jobs, all succeeded; /healthz answered {len(health.answers)} times, slowest "
        f"{max(seconds for _, seconds in health.answers) * 1000:.0f} ms"
    )


def test_a_command_in_flight_when_the_primary_dies_goes_on_at_the_new_one(settings, replicated):
    """A blocked command (as a stream read is) meets the kill mid-flight; its retry must ask the sentinels again.

    redis-py 8.1 alone reconnects such a connection to the lost primary for as long as the retries last
    (shared.redis_clients.PrimaryConnection).
    """
    patience = Retry(
        ExponentialWithJitterBackoff(base=PATIENT_RETRY.base, cap=PATIENT_RETRY.cap), PATIENT_RETRY.retries
    )
    client = connect(settings, socket_timeout=10, retry=patience)
    client.ping()
    old = replicated.primary()
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        blocked = pool.submit(client.blpop, ["convq:test:never"], 4)
        time.sleep(1)
        old.kill()
        assert blocked.result(timeout=40) is None  # sent again to the new primary, where it waited its 4 s
    took = time.monotonic() - started
    assert took < 15, f"{took:.1f} s: the retry went back to the lost primary"
    old.start()
    wait_until(lambda: old.role().get("master_link_status") == "up", 30, "the old primary to rejoin as a replica")
    print(f"\na BLPOP 4 in flight at the kill returned after {took:.1f} s (1 s before the kill)")


def test_a_primary_without_enough_replicas_refuses_submissions_with_503_and_keeps_no_job(settings, replicated):
    """NOREPLICAS (the primary's min-replicas-to-write not met, as when it is cut off from its replicas) is a 503."""
    client = create_app(settings).test_client()
    primary = replicated.primary().client()
    jobs_before = len(list(primary.scan_iter(job_keys_pattern())))
    primary.config_set("min-replicas-to-write", 3)  # two replicas: never met
    try:
        refused = client.post("/v1/correlations", json=tiny(1))
    finally:
        primary.config_set("min-replicas-to-write", 1)
    assert refused.status_code == 503 and refused.headers["Retry-After"], refused.get_json()
    assert refused.content_type == "application/problem+json"
    assert len(list(primary.scan_iter(job_keys_pattern()))) == jobs_before
    assert client.post("/v1/correlations", json=tiny(1)).status_code == 202


@contextlib.contextmanager
def replicas_silent(replicated: ReplicatedRedis):
    """Replicas that stop answering (SIGSTOP: still connected, as far as the primary knows): WAIT times out."""
    primary = replicated.primary()
    replicas = [node for node in replicated.nodes if node is not primary]
    for node in replicas:
        node.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for node in replicas:
            node.process.send_signal(signal.SIGCONT)


def test_a_submission_no_replica_confirms_in_time_gets_503_and_is_not_kept(settings, replicated):
    client = create_app(settings).test_client()
    primary = replicated.primary()
    jobs_before = len(list(primary.client().scan_iter(job_keys_pattern())))
    with replicas_silent(replicated):
        started = time.monotonic()
        refused = client.post("/v1/correlations", json=tiny(1))
        took = time.monotonic() - started
    assert refused.status_code == 503 and refused.headers["Retry-After"], refused.get_json()
    assert settings.replica_wait_seconds <= took < settings.replica_wait_seconds + 2
    assert len(list(primary.client().scan_iter(job_keys_pattern()))) == jobs_before  # discarded, not kept
    assert client.post("/v1/correlations", json=tiny(1)).status_code == 202


def test_a_start_or_an_end_no_replica_confirms_is_not_taken_for_done(settings, replicated):
    """The worker hands the job back on NotReplicated (a RedisError: worker.runner), so its message runs again."""
    store = JobStore.from_settings(settings, patient=True)
    job_id = store.create("correlation", packed(CorrelationRequest, tiny(1)), "unconfirmed")[0]["id"]
    with replicas_silent(replicated), pytest.raises(NotReplicated, match="attempt 1"):
        store.start(job_id, "cpu")
    attempt = store.start(job_id, "cpu")  # the message again, replicas back
    with replicas_silent(replicated), pytest.raises(NotReplicated, match="the end"):
        store.succeed(attempt, pack_result({"output": [[2.0, 2.0]]}, "lists"))
    assert store.start(job_id, "cpu") is None  # that end did reach the replicas: the message is dropped then
    assert store.get(job_id)["status"] == "succeeded"


def test_a_big_result_no_replica_holds_never_finishes_its_job(settings, replicated):
    """Big results share the replicated primary, beside FINISH, not inside it: once a failover lost the result's
    bytes but not the FINISH retried on the new primary, and the job read succeeded with no result."""
    store = JobStore.from_settings(settings, patient=True)
    job_id = store.create(
        "correlation", packed(CorrelationRequest, {"input": BIG.tolist(), "kernel": KERNEL.tolist()}), "big"
    )[0]["id"]
    attempt = store.start(job_id, "cpu")
    result = pack_result({"output": correlate(BIG, KERNEL)}, "lists")
    assert len(result) > INLINE_BYTES
    with replicas_silent(replicated), pytest.raises(NotReplicated, match="result"):
        store.succeed(attempt, result)
    assert store.get(job_id)["status"] == "running"  # handed back, not finished without its result
    assert not store.redis.exists(attempt_result_key_for(job_id, attempt.number))  # nor left behind
    assert store.succeed(store.start(job_id, "cpu"), result) == "succeeded"
    output = orjson.loads(orjson.dumps(store.get(job_id)["result"]))["output"]
    np.testing.assert_allclose(output, correlate(BIG, KERNEL), rtol=1e-5, atol=1e-6)  # float32, as stored


def test_a_worker_rides_out_a_primary_short_of_replicas(settings, replicated):
    """NOREPLICAS in a failover's first seconds (the other replicas not yet following the new primary): a worker's
    start and its training's losses wait for them, where a handed-back message could not even be requeued."""
    store = JobStore.from_settings(settings, patient=True)
    job_id = store.create("kernel_training", packed(KernelTrainingRequest, TRAINING), "short", epochs=EPOCHS)[0]["id"]
    primary = replicated.primary().client()
    with ThreadPoolExecutor(1) as pool:
        primary.config_set("min-replicas-to-write", 3)  # two replicas: not met
        starting = pool.submit(store.start, job_id, "cpu")
        time.sleep(1)
        assert not starting.done()
        primary.config_set("min-replicas-to-write", 1)
        attempt = starting.result(timeout=5)
        primary.config_set("min-replicas-to-write", 3)
        recording = pool.submit(store.record_epochs, attempt, 1, [0.5])
        time.sleep(1)
        primary.config_set("min-replicas-to-write", 1)
        assert recording.result(timeout=5) == (True, 1)


def test_the_rate_limit_is_counted_at_the_primary_the_sentinels_name(settings):
    client = create_app(settings.model_copy(update={"submit_rate_limit": "2/minute"})).test_client()
    answers = [client.post("/v1/correlations", json=tiny(number)).status_code for number in range(3)]
    assert answers == [202, 202, 429]  # limits' redis+sentinel storage works (its errors would be swallowed)


def test_a_primary_that_would_take_writes_without_replicas_is_warned_about(replicated, settings, caplog):
    primary = replicated.primary().client()
    with caplog.at_level(logging.WARNING, logger="shared.startup"):
        warn_about_redis(connect(settings), replicated=True)
        assert "min-replicas-to-write" not in caplog.text  # set as it should be
        primary.config_set("min-replicas-to-write", 0)
        try:
            warn_about_redis(connect(settings), replicated=True)
        finally:
            primary.config_set("min-replicas-to-write", 1)
    assert "min-replicas-to-write 0" in caplog.text


def test_what_waiting_for_a_replica_costs_a_submission(settings, replicated):
    """Not a timed assertion: with WAIT 1 (through the sentinels) and without (straight to the same primary), side by
    side, printed: a submission through the API (Flask's test client) and the job store's create alone."""
    unlimited = settings.model_copy(update={"submit_rate_limit": "1000000/minute"})
    direct = Settings(redis_url=f"redis://:{PASSWORD}@127.0.0.1:{replicated.primary().port}/0")
    clients = {"with WAIT": create_app(unlimited).test_client(), "without": create_app(direct).test_client()}
    stores = {"with WAIT": JobStore.from_settings(settings), "without": JobStore.from_settings(direct)}

    def submit(name: str, number: int) -> None:
        assert clients[name].post("/v1/correlations", json=tiny(number)).status_code == 202

    def create(name: str, number: int) -> None:
        job_id = stores[name].create("correlation", packed(CorrelationRequest, tiny(number)), "wait-cost")[0]["id"]
        stores[name].discard(job_id, "wait-cost")  # no message was sent: leave nothing for the reconciler

    for what, call in (("POST /v1/correlations", submit), ("job-store create + discard", create)):
        with_wait, without = side_by_side(call, ("with WAIT", "without"))
        print(
            f"\nWAIT cost, {what} (median of 5 interleaved rounds of 50): {with_wait:.2f} ms with WAIT 1, "
            f"{without:.2f} ms without, ratio {with_wait / without:.2f}, {with_wait - without:+.2f} ms"
        )


def side_by_side(call, names: tuple[str, ...], rounds: int = 5, per_round: int = 50) -> list[float]:
    """The median milliseconds of call(name, number) for each name, in interleaved rounds (a busy machine slows
    each alike)."""
    timings = {name: [] for name in names}
    for round_ in range(rounds):
        for name in names:
            started = time.perf_counter()
            for number in range(per_round):
                call(name, round_ * per_round + number)
            timings[name].append((time.perf_counter() - started) / per_round)
    return [float(np.median(timings[name])) * 1000 for name in names]
