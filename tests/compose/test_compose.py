"""`docker compose up` answers the seed, scales, stops and restarts without losing a job (`make compose-test`).

The tests run in file order on one stack: each leaves it as the next expects (the scale test leaves
two workers for the stop test).
"""

import json
import random
import subprocess
import time

import pytest
import requests

from tests.compose.conftest import FLOWER_LOGIN, Compose
from tests.compose.engine import run
from tests.seed import EDGE_IMAGE, EDGE_KERNEL, K_2X2, X_3X3, Y_3X3
from tests.support import wait_until

pytestmark = pytest.mark.compose

FINISHED = {"succeeded", "failed", "cancelled"}
# A training long enough to be running when its worker is stopped: 300 x 300, ~10 s on 2 cores.
LONG_TRAINING = {
    "input": [[random.Random(row).random() for _ in range(300)] for row in range(300)],
    "target_kernel": [[1, -1], [0.5, 0.25]],
    "epochs": 30_000,
    "lr": 1e-6,
}


def submit(stack: Compose, path: str, body: dict, wait: int = 0) -> dict:
    headers = {"Prefer": f"wait={wait}"} if wait else {}
    answer = requests.post(stack.api + path, json=body, headers=headers, timeout=wait + 30)
    assert answer.status_code in (200, 202), answer.text
    return answer.json()


def finished(stack: Compose, job_id: str, timeout: float = 120) -> dict:
    def done():
        job = stack.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in FINISHED else None

    return wait_until(done, timeout, f"job {job_id} to finish", 0.25)


def test_redis_api_and_worker_are_healthy_and_ready(compose):
    health = dict(line.split() for line in compose("ps", "--format", "{{.Service}} {{.Health}}").stdout.splitlines())
    assert health == {"redis": "healthy", "bulk-redis": "healthy", "api": "healthy", "worker": "healthy"}
    assert compose.get("/healthz").status_code == 200
    ready = compose.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "redis": "ok", "workers": 1}


def test_a_clean_start_logs_no_error(compose):
    logs = compose.logs("api", "worker")
    errors = [line for line in logs.splitlines() if '"level": "ERROR"' in line or "Traceback" in line]
    assert not errors, "\n".join(errors)
    assert '"level": "INFO"' in logs  # the logs were read: JSON lines from both services


def test_the_seed_correlation_gives_19_25_37_43(compose):
    job = submit(compose, "/v1/correlations", {"input": X_3X3, "kernel": K_2X2}, wait=10)
    assert job["status"] == "succeeded"
    assert job["result"]["output"] == Y_3X3


def test_the_seed_edge_training_gives_20_decreasing_losses(compose):
    body = {"input": EDGE_IMAGE, "target_kernel": EDGE_KERNEL}
    job = finished(compose, submit(compose, "/v1/kernel-trainings", body)["id"])
    losses = job["result"]["loss_history"]
    assert job["status"] == "succeeded" and len(losses) == 20
    assert all(later < earlier for earlier, later in zip(losses, losses[1:], strict=False))


def test_the_api_image_draws_pictures_with_its_font_cache(compose):
    correlation = submit(compose, "/v1/correlations", {"input": X_3X3, "kernel": K_2X2}, wait=10)
    png = compose.get(f"/v1/jobs/{correlation['id']}/output.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    training = finished(
        compose,
        submit(compose, "/v1/kernel-trainings", {"input": EDGE_IMAGE, "epochs": 5, "target_kernel": EDGE_KERNEL})["id"],
    )
    svg = compose.get(f"/v1/jobs/{training['id']}/loss.svg")
    assert svg.status_code == 200 and b"<svg" in svg.content
    assert "Matplotlib created a temporary cache directory" not in compose.logs("api")


def test_the_worker_image_holds_the_cpu_build_of_torch(compose):
    assert compose("exec", "worker", "python", "-c", "import torch; print(torch.version.cuda)").stdout.strip() == "None"


def test_compose_refuses_to_start_without_a_redis_password(compose):
    with pytest.raises(RuntimeError, match="set REDIS_PASSWORD in .env"):
        compose("config", REDIS_PASSWORD="")


def test_a_big_correlation_moves_its_arrays_through_the_bulk_redis(compose):
    big = [[float(i % 7) for i in range(200)] for _ in range(200)]  # 160 KB of float32: over the inline limit
    job = submit(compose, "/v1/correlations", {"input": big, "kernel": [[1.0]]}, wait=30)
    assert job["status"] == "succeeded" and job["result"]["output"] == big
    password = 'REDISCLI_AUTH="$REDIS_PASSWORD"'
    stored = compose("exec", "bulk-redis", "sh", "-c", f"{password} redis-cli --scan --pattern 'convq:job:*'").stdout
    assert f"convq:job:{job['id']}:result:1" in stored


def test_the_bulk_redis_yields_the_cores_to_the_queue_redis(compose):
    def niceness(service: str) -> str:
        return compose("exec", service, "cut", "-d", " ", "-f", "19", "/proc/1/stat").stdout.strip()

    assert (niceness("bulk-redis"), niceness("redis")) == ("10", "0")


def test_redis_publishes_no_port_and_the_api_only_loopback(compose):
    for service in ("redis", "bulk-redis"):
        (redis,) = compose.containers(service)
        assert not any(_published(redis).values())
    (api,) = compose.containers("api")
    assert [binding["HostIp"] for binding in _published(api)["8000/tcp"]] == ["127.0.0.1"]


def test_redis_runs_as_its_own_user_and_the_services_under_an_init(compose):
    assert compose("exec", "redis", "id", "-un").stdout.strip() == "redis"
    for service in ("api", "worker"):
        assert compose("exec", service, "id", "-u").stdout.strip() == "10001"
        assert compose("exec", service, "cat", "/proc/1/comm").stdout.strip() == "docker-init"


def test_scaled_to_two_workers_readyz_counts_two(compose):
    compose("up", "--detach", "--scale", "worker=2")
    wait_until(lambda: compose.ready_workers() == 2, 120, "/readyz to count 2 workers", 0.5)


def test_a_worker_stopped_mid_training_hands_it_back_and_it_succeeds_once(compose):
    job_id = submit(compose, "/v1/kernel-trainings", LONG_TRAINING)["id"]
    running_on = wait_until(lambda: _container_running(compose, job_id), 60, "the training to start", 0.25)
    wait_until(lambda: (compose.get(f"/v1/jobs/{job_id}").json()["progress"] or {}).get("epoch", 0) > 100, 30, "epochs")
    started = time.monotonic()
    run("docker", "stop", "--time", "40", running_on)  # what `docker compose stop` does: SIGTERM, SIGKILL at 40 s
    # Handed back after its grace and exited cleanly, not SIGKILLed (137) at 40 s.
    assert run("docker", "inspect", "--format", "{{.State.ExitCode}}", running_on).stdout.strip() == "0"
    assert time.monotonic() - started < 40

    job = finished(compose, job_id, timeout=180)
    assert job["status"] == "succeeded" and job["attempts"] == 2
    losses = job["result"]["loss_history"]
    assert len(losses) == LONG_TRAINING["epochs"] == job["result"]["epochs_run"]
    # Exactly one loss per epoch, the same as an undisturbed run of the same request (same seed).
    reference = finished(compose, submit(compose, "/v1/kernel-trainings", LONG_TRAINING)["id"], timeout=180)
    assert reference["attempts"] == 1 and reference["result"]["loss_history"] == losses
    compose("up", "--detach", "--scale", "worker=2")  # the stopped one back, for the tests after


def test_a_worker_stopped_in_its_first_seconds_exits_at_once(compose):
    compose("up", "--detach", "--scale", "worker=3", "--no-recreate")
    newest = sorted(compose.containers("worker"), key=lambda name: int(name.rsplit("-", 1)[1]))[-1]
    started = time.monotonic()
    run("docker", "stop", "--time", "40", newest)
    assert time.monotonic() - started < 30  # Docker would wait its 40 s for a worker that ignored SIGTERM
    assert run("docker", "inspect", "--format", "{{.State.ExitCode}}", newest).stdout.strip() != "137"
    compose("up", "--detach", "--scale", "worker=2", "--no-recreate")


def test_down_and_up_keep_finished_jobs_in_the_volume(compose):
    job = submit(compose, "/v1/correlations", {"input": X_3X3, "kernel": K_2X2}, wait=10)
    compose("down")
    compose("up", "--detach", "--wait", timeout=300)
    kept = compose.get(f"/v1/jobs/{job['id']}")
    assert kept.status_code == 200 and kept.json()["result"]["output"] == Y_3X3


def test_flower_is_on_loopback_and_asks_for_the_login_when_one_is_set(compose):
    url = f"http://127.0.0.1:{compose.settings['FLOWER_PORT']}/"
    compose("--profile", "monitoring", "up", "--detach", "flower")
    assert wait_until(lambda: _status(url), 60, "Flower", 0.5) == 200  # no login set: open, on loopback
    compose("--profile", "monitoring", "up", "--detach", "flower", FLOWER_BASIC_AUTH=FLOWER_LOGIN)
    assert wait_until(lambda: _status(url) == 401, 60, "Flower to ask for the login", 0.5)
    user, password = FLOWER_LOGIN.split(":")
    assert requests.get(url, auth=(user, password), timeout=10).status_code == 200
    (flower,) = compose.containers("flower")
    assert [binding["HostIp"] for binding in _published(flower)["5555/tcp"]] == ["127.0.0.1"]


def _container_running(compose: Compose, job_id: str) -> str | None:
    """The worker container whose log shows the job's first attempt starting."""
    for name in compose.containers("worker"):
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
        for line in (logs.stdout + logs.stderr).splitlines():
            if '"message": "attempt 1 started"' in line and f'"job_id": "{job_id}"' in line:
                return name
    return None


def _published(container: str) -> dict[str, list[dict] | None]:
    """The container's ports and the host addresses each is published on (None: not published)."""
    return json.loads(run("docker", "inspect", "--format", "{{json .NetworkSettings.Ports}}", container).stdout)


def _status(url: str) -> int | None:
    try:
        return requests.get(url, timeout=5).status_code
    except requests.RequestException:
        return None
