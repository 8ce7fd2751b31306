"""`docker compose --profile ha`: the stack rides out a `docker kill` of the Redis primary under load.

A project of its own beside the default one, from the same images and checkout: REDIS_SENTINELS set as
.env.example shows, the api and worker find the primary through the three sentinels.
"""

import random
import threading
import time

import numpy as np
import pytest
import requests

from tests.compose.conftest import PROJECT, Compose
from tests.compose.engine import run
from tests.compose.test_compose import finished, submit
from tests.support import free_port, wait_until

pytestmark = pytest.mark.compose

SENTINELS = "sentinel-1:26379,sentinel-2:26379,sentinel-3:26379"
HA_SERVICES = {"redis", "redis-replica-1", "redis-replica-2", "sentinel-1", "sentinel-2", "sentinel-3", "api", "worker"}
# Under ha, big arrays go to the replicated primary too (BULK_REDIS_URL empty, as .env.example says); bulk-redis,
# outside any profile, still starts, and holds nothing.
ALL_SERVICES = HA_SERVICES | {"bulk-redis"}
TRAINING = {
    "input": [[random.Random(row).random() for _ in range(48)] for row in range(48)],  # in [0, 1): no divergence
    "target_kernel": [[1.0, -1.0], [0.5, 0.25]],
    "epochs": 3000,
    "lr": 1e-4,
}


@pytest.fixture(scope="module")
def ha(compose, report):
    overrides = {"REDIS_SENTINELS": SENTINELS, "BULK_REDIS_URL": "", "API_PORT": str(free_port())}
    stack = Compose(compose.tree, compose.env, f"{PROJECT}-ha", **overrides)
    try:
        started = time.monotonic()
        stack("--profile", "ha", "up", "--detach")
        try:
            wait_until(stack.ready_workers, 240, "/readyz 200 with sentinels", 0.25)
        except TimeoutError as error:
            raise RuntimeError(f"{error}\n{stack('ps', '--all').stdout}\n{stack.logs()[-5000:]}") from None
        report["ha ready"] = f"/readyz 200 after {time.monotonic() - started:.1f} s"
        yield stack
    finally:
        stack("--profile", "ha", "down", "--volumes", timeout=300)


def sentinel_says(stack: Compose, *command: str) -> list[str]:
    password = stack.settings["REDIS_PASSWORD"]
    answer = stack("exec", "-e", f"REDISCLI_AUTH={password}", "sentinel-1", "redis-cli", "-p", "26379", *command)
    return answer.stdout.split()


def replication(stack: Compose, container: str) -> dict[str, str]:
    password = stack.settings["REDIS_PASSWORD"]
    info = run("docker", "exec", "-e", f"REDISCLI_AUTH={password}", container, "redis-cli", "info", "replication")
    return dict(line.split(":", 1) for line in info.stdout.split() if ":" in line)


def diagnosis(stack: Compose, during: list, killed_at: float) -> str:
    """What the submissions got after the kill, each server's view of replication, the sentinels' and api's logs."""
    answers = [
        f"{at - killed_at:.1f} s: {answer if isinstance(answer, str) else (answer.status_code, answer.text[:200])}"
        for at, _, answer in during[-10:]
    ]
    views = [
        f"{service}: {replication(stack, container) if container else 'down'}"
        for service in ("redis-replica-1", "redis-replica-2")
        for container in stack.containers(service) or [None]
    ]
    logs = stack.logs("sentinel-1", "redis-replica-1", "redis-replica-2")[-6000:] + stack.logs("api")[-3000:]
    return "\n".join([*answers, *views, logs])


def test_the_ha_profile_runs_a_primary_two_replicas_and_three_private_sentinels(ha):
    services = set(ha("--profile", "ha", "ps", "--format", "{{.Service}}").stdout.split())
    assert services == ALL_SERVICES
    assert sentinel_says(ha, "sentinel", "get-master-addr-by-name", "convq") == ["redis", "6379"]
    (primary,) = ha.containers("redis")
    assert replication(ha, primary)["connected_slaves"] == "2"
    for service in HA_SERVICES - {"api"}:
        for container in ha.containers(service):
            ports = run("docker", "inspect", "--format", "{{json .NetworkSettings.Ports}}", container).stdout
            assert "HostIp" not in ports, (service, ports)  # nothing published


def test_big_arrays_go_to_the_replicated_primary_not_the_bulk_redis(ha):
    matrix = np.random.default_rng(0).random((160, 160), dtype=np.float32)  # 100 KB: over the 64 KiB kept inline
    job = finished(ha, submit(ha, "/v1/correlations", {"input": matrix.tolist(), "kernel": [[1.0, -1.0]]}, 60)["id"])
    assert job["status"] == "succeeded", job
    assert np.allclose(job["result"]["output"], matrix[:, :-1] - matrix[:, 1:], atol=1e-5)
    (bulk,) = ha.containers("bulk-redis")
    password = ha.settings["REDIS_PASSWORD"]
    keys = run("docker", "exec", "-e", f"REDISCLI_AUTH={password}", bulk, "redis-cli", "dbsize").stdout.strip()
    assert keys == "0"


def test_docker_kill_of_the_primary_under_load_loses_no_job(ha, report):
    def submit(number: int) -> requests.Response:
        return requests.post(
            f"{ha.api}/v1/correlations", json={"input": [[float(number), 1.0]], "kernel": [[2.0]]}, timeout=30
        )

    trainings = [requests.post(f"{ha.api}/v1/kernel-trainings", json=TRAINING, timeout=30) for _ in range(3)]
    answers = {number: submit(number) for number in range(30)}
    assert {answer.status_code for answer in [*trainings, *answers.values()]} == {202}
    accepted = {number: answer.json()["id"] for number, answer in answers.items()}

    during: list[tuple[float, int, requests.Response | str]] = []
    stopped = threading.Event()

    def keep_submitting() -> None:
        number = 1000
        while not stopped.wait(0.2):
            number += 1
            try:
                during.append((time.monotonic(), number, submit(number)))
            except requests.RequestException as error:
                during.append((time.monotonic(), number, repr(error)))

    (primary,) = ha.containers("redis")
    submitter = threading.Thread(target=keep_submitting, daemon=True)
    submitter.start()
    run("docker", "kill", primary)
    killed_at = time.monotonic()
    wait_until(
        lambda: sentinel_says(ha, "sentinel", "get-master-addr-by-name", "convq")[:1] not in ([], ["redis"]),
        60,
        "the sentinels to promote a replica",
        0.5,
    )
    promoted_at = time.monotonic()
    try:
        wait_until(
            lambda: any(
                not isinstance(answer, str) and answer.status_code == 202 and at > promoted_at
                for at, _, answer in during
            ),
            60,
            "a submission accepted by the new primary",
            0.5,
        )
    except TimeoutError as error:
        raise RuntimeError(f"{error}\n{diagnosis(ha, during, killed_at)}") from None
    stopped.set()
    submitter.join()

    refused = [(at, answer) for at, _, answer in during if isinstance(answer, str) or answer.status_code != 202]
    assert all(
        not isinstance(answer, str) and answer.status_code == 503 and answer.headers["Retry-After"]
        for _, answer in refused
    ), refused
    accepted |= {
        number: answer.json()["id"]
        for _, number, answer in during
        if not isinstance(answer, str) and answer.status_code == 202
    }
    for number, job_id in accepted.items():
        job = finished(ha, job_id, timeout=180)
        assert job["status"] == "succeeded" and job["result"]["output"] == [[2.0 * number, 2.0]], job
    for training in trainings:
        job = finished(ha, training.json()["id"], timeout=180)
        assert job["status"] == "succeeded", (job["error"], job["progress"], job["attempts"])
        assert len(job["result"]["loss_history"]) == TRAINING["epochs"]
        assert ha.get(f"/v1/jobs/{job['id']}/loss").json()["epochs_done"] == TRAINING["epochs"]

    run("docker", "start", primary)  # back with its old data: the sentinels make it a replica of the new primary
    wait_until(lambda: replication(ha, primary).get("master_link_status") == "up", 90, "the old primary to rejoin", 1)
    assert replication(ha, primary)["role"] == "slave"
    window = [at - killed_at for at, _ in refused]
    report["ha failover"] = (
        f"docker kill of the primary to a promoted replica {promoted_at - killed_at:.1f} s (down-after 5 s); "
        f"{len(refused)} of {len(during)} submissions refused with 503, up to {max(window, default=0):.1f} s "
        f"after the kill; {len(accepted) + len(trainings)} jobs, all succeeded; the old primary rejoined as a replica"
    )
