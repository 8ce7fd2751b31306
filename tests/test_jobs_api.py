"""Jobs through the API and a real Celery worker: submit, wait for the worker's effect, read, follow, cancel."""

import base64
import json
import math
import re
import time

import pytest
import torch

from services import corr2d_reference, strategy
from tests.seed import EDGE_IMAGE, EDGE_KERNEL, EDGES, K_2X2, TRANSPOSED_EDGES, X_3X3, Y_3X3, transpose
from tests.support import wait_for_job, wait_until

pytestmark = pytest.mark.usefixtures("worker")


def submit(client, path: str, body: dict) -> dict:
    response = client.post(path, json=body)
    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["result"] is None and job["error"] is None
    return job


def correlate(client, body: dict) -> dict:
    return wait_for_job(client, submit(client, "/v1/correlations", body)["id"])


def train(client, body: dict) -> dict:
    return wait_for_job(client, submit(client, "/v1/kernel-trainings", body)["id"])


def slow_training(client, epochs: int = 100_000) -> dict:
    """A training that would take minutes, to catch it running (tests cancel it)."""
    generator = torch.Generator().manual_seed(0)
    body = {
        "input": torch.rand((90, 100), generator=generator).tolist(),
        "target_kernel": [[0.1] * 30] * 3,
        "lr": 1e-6,
        "epochs": epochs,
    }
    return submit(client, "/v1/kernel-trainings", body)


def test_seed_3x3_example_through_the_api(client):
    job = correlate(client, {"input": X_3X3, "kernel": K_2X2})
    assert job["status"] == "succeeded", job
    assert job["result"] == {"output": Y_3X3, "shape": [2, 2]}
    assert job["kind"] == "correlation" and job["progress"] is None and job["error"] is None
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]


def test_seed_edge_image_and_its_transpose_through_the_api(client):
    edges = correlate(client, {"input": EDGE_IMAGE, "kernel": EDGE_KERNEL})
    assert edges["result"] == {"output": EDGES, "shape": [6, 7]}
    none = correlate(client, {"input": transpose(EDGE_IMAGE), "kernel": EDGE_KERNEL})
    assert none["result"] == {"output": TRANSPOSED_EDGES, "shape": [8, 5]}


def test_padding_stride_and_bias_agree_with_the_reference_loop(client):
    X = torch.randn((7, 9), generator=torch.Generator().manual_seed(3))
    K = torch.randn((3, 2), generator=torch.Generator().manual_seed(4))
    job = correlate(
        client, {"input": X.tolist(), "kernel": K.tolist(), "padding": [2, 1], "stride": [2, 3], "bias": 0.25}
    )
    expected = corr2d_reference(X, K, padding=(2, 1), stride=(2, 3), bias=0.25)
    assert job["result"]["shape"] == list(expected.shape)
    assert torch.allclose(torch.tensor(job["result"]["output"]), expected, atol=1e-5)


def test_the_worker_logs_which_path_computed_each_correlation(client, worker):
    job = correlate(client, {"input": torch.rand((100, 100)).tolist(), "kernel": [[1.0, 0.0, -1.0]] * 3})
    lines = [json.loads(line) for line in worker.log_path.read_text().splitlines() if job["id"] in line]
    [computed] = [line["message"] for line in lines if line["message"].startswith("correlating")]
    assert computed == f"correlating (100, 100) by {strategy((98, 98), (3, 3))} with a (3, 3) kernel"


def base64_array(matrix: torch.Tensor, dtype: str = "float32") -> dict:
    data = matrix.numpy().astype("<f4" if dtype == "float32" else "<f8").tobytes()
    return {"shape": list(matrix.shape), "dtype": dtype, "data": base64.b64encode(data).decode()}


def from_base64(array: dict) -> torch.Tensor:
    assert array["dtype"] == "float32"
    return torch.frombuffer(bytearray(base64.b64decode(array["data"])), dtype=torch.float32).reshape(array["shape"])


def test_base64_arrays_in_and_out_give_the_same_numbers_as_lists(client):
    X = torch.randn((40, 30), generator=torch.Generator().manual_seed(5))
    K = torch.randn((3, 3), generator=torch.Generator().manual_seed(6))
    as_lists = correlate(client, {"input": X.tolist(), "kernel": K.tolist()})["result"]
    packed = {"input": base64_array(X), "kernel": base64_array(K.double(), "float64"), "result_format": "base64"}
    as_base64 = correlate(client, packed)["result"]
    assert as_base64["shape"] == as_lists["shape"] == [38, 28]
    output = from_base64(as_base64["output"])
    assert output.shape == (38, 28) and torch.equal(output, torch.tensor(as_lists["output"]))
    assert torch.allclose(output, corr2d_reference(X, K), atol=1e-5)


def test_a_training_returns_its_kernel_in_base64_when_asked(client):
    body = {"input": base64_array(torch.tensor(EDGE_IMAGE)), "target": EDGES, "kernel_size": [1, 2]}
    job = train(client, {**body, "epochs": 20, "result_format": "base64"})
    kernel = from_base64(job["result"]["kernel"])
    assert kernel.shape == (1, 2) and torch.allclose(kernel, torch.tensor([[1.0, -1.0]]), atol=0.05)
    assert len(job["result"]["loss_history"]) == 20


def test_seed_learns_the_edge_kernel_through_the_api(client):
    job = train(client, {"input": EDGE_IMAGE, "target": EDGES, "kernel_size": [1, 2]})
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["epochs_run"] == 20 and len(result["loss_history"]) == 20
    assert result["loss"] == result["loss_history"][-1] < result["loss_history"][0]
    assert result["bias"] is None
    assert result["kernel"][0] == pytest.approx([1.0, -1.0], abs=0.05)
    assert job["progress"] == {"epoch": 20, "epochs": 20, "loss": result["loss"]}

    page = client.get(f"/v1/jobs/{job['id']}/loss?since=0").get_json()
    assert page == {
        "losses": result["loss_history"],
        "since": 0,
        "epochs_done": 20,
        "epochs": 20,
        "status": "succeeded",
    }
    tail = client.get(f"/v1/jobs/{job['id']}/loss?since=18").get_json()
    assert tail["losses"] == result["loss_history"][18:] and tail["since"] == 18


def test_a_fast_training_writes_its_losses_in_batches_not_a_round_trip_per_epoch(client, redis_server):
    redis = redis_server.client()

    def script_calls() -> int:
        return redis.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)

    before = script_calls()
    job = train(client, {"input": EDGE_IMAGE, "target": EDGES, "kernel_size": [1, 2], "epochs": 3000, "lr": 0.001})
    calls = script_calls() - before
    assert job["status"] == "succeeded" and len(job["result"]["loss_history"]) == 3000
    page = client.get(f"/v1/jobs/{job['id']}/loss").get_json()
    assert page["epochs_done"] == 3000 and page["losses"] == job["result"]["loss_history"]
    assert calls < 60, f"{calls} job-store scripts ran for 3000 epochs"  # one per epoch would be 3000


def test_training_from_a_target_kernel_with_bias_and_equal_seeds_agree(client):
    body = {"input": EDGE_IMAGE, "target_kernel": EDGE_KERNEL, "bias": True, "seed": 11, "epochs": 30}
    first, second = train(client, body), train(client, body)
    assert first["status"] == second["status"] == "succeeded"
    assert first["result"] == second["result"]
    assert isinstance(first["result"]["bias"], float)
    assert train(client, {**body, "seed": 12})["result"] != first["result"]


def test_a_diverging_training_fails_with_an_actionable_error_and_no_nan(client):
    generator = torch.Generator().manual_seed(1)
    job = train(
        client,
        {
            "input": torch.randn((60, 60), generator=generator).tolist(),
            "target_kernel": [[1, 2, 3]] * 3,
            "lr": 0.5,
            "epochs": 50,
        },
    )
    assert job["status"] == "failed" and job["result"] is None
    assert job["error"]["title"] == "Training diverged"
    assert "lower lr" in job["error"]["detail"] and "diverged at epoch" in job["error"]["detail"]
    page = client.get(f"/v1/jobs/{job['id']}/loss")
    assert all(math.isfinite(loss) for loss in page.get_json()["losses"])
    assert b"NaN" not in page.get_data() and b"Infinity" not in page.get_data()
    diverged_at = int(re.search(r"diverged at epoch (\d+)", job["error"]["detail"]).group(1))
    assert job["progress"]["epoch"] == len(page.get_json()["losses"]) == diverged_at - 1  # every finite epoch kept


def test_unfinished_jobs_say_when_to_ask_again_and_finished_ones_do_not(client):
    job = slow_training(client)
    assert client.get(f"/v1/jobs/{job['id']}").headers["Retry-After"] == "1"
    client.delete(f"/v1/jobs/{job['id']}")
    finished = wait_for_job(client, job["id"])
    assert "Retry-After" not in client.get(f"/v1/jobs/{finished['id']}").headers


def test_the_loss_history_grows_while_training_and_cancel_stops_it_within_an_epoch(client):
    job = slow_training(client)
    loss_url = f"/v1/jobs/{job['id']}/loss"
    first = wait_until(lambda: (page := client.get(loss_url).get_json())["epochs_done"] >= 2 and page, 30, "epochs")
    assert first["status"] == "running" and first["epochs"] == 100_000
    later = wait_until(
        lambda: (page := client.get(f"{loss_url}?since={first['epochs_done']}").get_json())["losses"] and page,
        30,
        "more epochs",
    )
    assert later["epochs_done"] > first["epochs_done"]
    assert len(later["losses"]) == later["epochs_done"] - first["epochs_done"]
    running = client.get(f"/v1/jobs/{job['id']}").get_json()
    assert running["status"] == "running" and 0 < running["progress"]["epoch"] < 100_000

    cancel = client.delete(f"/v1/jobs/{job['id']}")
    assert cancel.status_code == 202 and cancel.get_json()["status"] == "running"
    cancelled = wait_for_job(client, job["id"])
    assert cancelled["status"] == "cancelled" and cancelled["result"] is None
    stopped_at = client.get(loss_url).get_json()["epochs_done"]
    assert stopped_at < 100_000
    time.sleep(0.3)
    assert client.get(loss_url).get_json()["epochs_done"] == stopped_at


def test_a_cancelled_queued_job_never_runs(client):
    busy = [slow_training(client) for _ in range(2)]  # both worker processes
    wait_until(
        lambda: all(client.get(f"/v1/jobs/{job['id']}").get_json()["status"] == "running" for job in busy),
        30,
        "busy worker",
    )
    waiting = submit(client, "/v1/correlations", {"input": X_3X3, "kernel": K_2X2})
    response = client.delete(f"/v1/jobs/{waiting['id']}")
    assert response.status_code == 200 and response.get_json()["status"] == "cancelled"
    for job in busy:
        client.delete(f"/v1/jobs/{job['id']}")
    for job in busy:
        wait_for_job(client, job["id"])
    after = submit(client, "/v1/correlations", {"input": X_3X3, "kernel": K_2X2})
    assert wait_for_job(client, after["id"])["status"] == "succeeded"  # the worker has passed the cancelled job
    job = client.get(f"/v1/jobs/{waiting['id']}").get_json()
    assert job["status"] == "cancelled" and job["started_at"] is None and job["result"] is None


def test_cancelling_a_finished_job_changes_nothing(client):
    job = correlate(client, {"input": X_3X3, "kernel": K_2X2})
    response = client.delete(f"/v1/jobs/{job['id']}")
    assert response.status_code == 200 and response.get_json() == job


def test_a_correlation_has_no_loss_history(client):
    job = correlate(client, {"input": X_3X3, "kernel": K_2X2})
    response = client.get(f"/v1/jobs/{job['id']}/loss")
    assert response.status_code == 404 and "only kernel trainings" in response.get_json()["detail"]


@pytest.mark.parametrize("since", ["-1", "x", "1.5", "99999999999", "²"])
def test_a_bad_since_is_a_400_naming_the_parameter(client, since):
    job = train(client, {"input": EDGE_IMAGE, "target": EDGES, "kernel_size": [1, 2], "epochs": 2})
    response = client.get(f"/v1/jobs/{job['id']}/loss?since={since}")
    assert response.status_code == 400 and response.get_json()["errors"][0]["loc"] == "/since"


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["workers"] >= 1


def test_jobs_match_the_documented_model(client):
    from shared.response_models import Job

    for job in (
        correlate(client, {"input": X_3X3, "kernel": K_2X2}),
        train(client, {"input": EDGE_IMAGE, "target_kernel": EDGE_KERNEL, "epochs": 3}),
    ):
        assert Job.model_validate(job).model_dump(mode="json") == job
