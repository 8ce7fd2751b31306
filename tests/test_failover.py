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
"""

import logging
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from api import create_app
from shared.jobstore import JobKeys
from shared.redis_clients import connect
from shared.settings import Settings
from shared.startup import warn_about_redis
from tests.replication import PASSWORD, SENTINEL_PASSWORD, ReplicatedRedis
from tests.support import HealthProbe, Stack, finished_job, wait_until

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
        assert job["status"] == "succeeded", (kind, number, job)
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
    """Not a timed assertion: POST /v1/correlations with WAIT 1 (through the sentinels) and without it (straight to
    the same primary), side by side, printed."""
    primary = f"redis://:{PASSWORD}@127.0.0.1:{replicated.primary().port}/0"
    unlimited = {"submit_rate_limit": "1000000/minute"}
    clients = {
        "with WAIT": create_app(settings.model_copy(update=unlimited)).test_client(),
        "without": create_app(Settings(redis_url=primary, **unlimited)).test_client(),
    }
    timings = {name: [] for name in clients}
    for round_ in range(5):  # interleaved rounds: a busy machine slows both alike
        for name, client in clients.items():
            started = time.perf_counter()
            for number in range(50):
                assert client.post("/v1/correlations", json=tiny(round_ * 50 + number)).status_code == 202
            timings[name].append((time.perf_counter() - started) / 50)
    with_wait, without = (float(np.median(timings[name])) * 1000 for name in clients)
    print(
        f"\nWAIT cost per submission (POST /v1/correlations, Flask test client, median of 5 rounds of 50): "
        f"{with_wait:.2f} ms with WAIT 1, {without:.2f} ms without, ratio {with_wait / without:.2f}; "
        f"+{with_wait - without:.2f} ms"
    )
