"""Arrays as .npy files: submitted as multipart parts, results read as .npy, the same numbers as JSON and base64."""

import io
import json

import numpy as np
import pytest

from tests.seed import EDGE_IMAGE, EDGES, K_2X2, X_3X3, Y_3X3
from tests.support import wait_for_job
from tests.test_jobs_api import correlate, train

pytestmark = pytest.mark.usefixtures("worker")

CORRELATIONS, TRAININGS = "/v1/correlations", "/v1/kernel-trainings"
NPY = "application/x-npy"


def npy(array, dtype="<f4", **save) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=dtype), **save)
    return buffer.getvalue()


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{name: np.asarray(value, dtype="<f4") for name, value in arrays.items()})
    return buffer.getvalue()


def base64_form(array) -> dict:
    from shared.arrays import to_base64

    return to_base64(np.asarray(array, dtype=np.float32))


def post_form(client, path: str, files: dict[str, bytes], headers: dict | None = None, **fields):
    form = {name: (io.BytesIO(data), f"{name}.npy") for name, data in files.items()}
    form |= {name: value if isinstance(value, str) else json.dumps(value) for name, value in fields.items()}
    return client.post(path, data=form, content_type="multipart/form-data", headers=headers)


def finished(client, response) -> dict:
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job
    return job


def load(response) -> np.ndarray:
    assert response.status_code == 200, response.get_data()
    assert response.mimetype == NPY
    return np.load(io.BytesIO(response.get_data()), allow_pickle=False)


def test_a_correlation_of_npy_files_gives_the_numbers_of_json_lists_and_base64(client):
    rng = np.random.default_rng(0)
    x, k = rng.standard_normal((40, 50)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32)
    options = {"padding": [1, 2], "stride": 2, "bias": 0.25}
    by_npy = finished(client, post_form(client, CORRELATIONS, {"input": npy(x), "kernel": npy(k)}, **options))
    by_lists = correlate(client, {"input": x.tolist(), "kernel": k.tolist(), **options})
    by_base64 = correlate(client, {"input": base64_form(x), "kernel": base64_form(k), **options})
    assert by_npy["result"] == by_lists["result"]
    assert by_base64["result"] == by_lists["result"]
    output = load(client.get(f"/v1/jobs/{by_npy['id']}/output.npy"))
    expected = np.array(by_lists["result"]["output"], dtype=np.float32)
    assert output.dtype == np.float32 and np.array_equal(output, expected)
    assert np.array_equal(load(client.get(f"/v1/jobs/{by_lists['id']}/output.npy")), expected)


def test_float64_big_endian_and_fortran_order_are_read_as_their_numbers(client):
    x = np.asfortranarray(np.array(X_3X3, dtype=">f8"))
    job = finished(client, post_form(client, CORRELATIONS, {"input": npy(x, ">f8")}, kernel=K_2X2))
    assert job["result"]["output"] == Y_3X3


def test_the_other_fields_may_come_as_one_json_part(client):
    files = {"input": npy(X_3X3), "request": json.dumps({"kernel": K_2X2, "result_format": "base64"}).encode()}
    job = finished(client, post_form(client, CORRELATIONS, files))
    assert job["result"]["output"]["shape"] == [2, 2]
    assert load(client.get(f"/v1/jobs/{job['id']}/output.npy")).tolist() == Y_3X3


def test_long_arrays_in_the_json_part_are_read_as_in_a_json_body(client):
    x = np.arange(60 * 70, dtype=np.float32).reshape(60, 70) % 7
    files = {"kernel": npy(K_2X2), "request": json.dumps({"input": x.tolist(), "padding": 1}).encode()}
    by_form = finished(client, post_form(client, CORRELATIONS, files))
    assert by_form["result"] == correlate(client, {"input": x.tolist(), "kernel": K_2X2, "padding": 1})["result"]


def test_a_training_of_npy_files_learns_the_kernel_of_json_lists_and_base64(client):
    options = {"kernel_size": [1, 2], "lr": 0.03, "epochs": 20}
    files = {"input": npy(EDGE_IMAGE), "target": npy(EDGES)}
    by_npy = finished(client, post_form(client, TRAININGS, files, **options))
    by_lists = train(client, {"input": EDGE_IMAGE, "target": EDGES, **options})
    by_base64 = train(client, {"input": base64_form(EDGE_IMAGE), "target": base64_form(EDGES), **options})
    assert by_npy["result"] == by_lists["result"] == by_base64["result"]
    kernel = load(client.get(f"/v1/jobs/{by_npy['id']}/kernel.npy"))
    assert np.array_equal(kernel, np.array(by_lists["result"]["kernel"], dtype=np.float32))


def test_training_pairs_come_as_one_npz(client):
    rng = np.random.default_rng(1)
    inputs = rng.standard_normal((3, 6, 7)).astype(np.float32)
    kernel = np.array([[1, -1]], dtype=np.float32)
    options = {"target_kernel": kernel.tolist(), "epochs": 5, "lr": 0.01, "seed": 3}
    by_npz = finished(client, post_form(client, TRAININGS, {"pairs": npz(inputs=inputs)}, **options))
    by_lists = train(client, {"pairs": [{"input": item.tolist()} for item in inputs], **options})
    assert by_npz["result"] == by_lists["result"]
    targets = np.stack([np.array(EDGES, dtype=np.float32)] * 2)
    pairs = npz(inputs=np.stack([np.array(EDGE_IMAGE, dtype=np.float32)] * 2), targets=targets)
    options = {"kernel_size": [1, 2], "epochs": 20, "lr": 0.015, "loss": "sum"}
    job = finished(client, post_form(client, TRAININGS, {"pairs": pairs}, **options))
    assert load(client.get(f"/v1/jobs/{job['id']}/kernel.npy"))[0] == pytest.approx([1, -1], abs=0.05)
    lists = train(client, {"pairs": [{"input": EDGE_IMAGE, "target": EDGES}] * 2, **options})
    assert job["result"] == lists["result"]


def test_npy_results_are_404_for_unknown_jobs_and_for_the_other_kind(client):
    for path in ("/v1/jobs/00000000-0000-0000-0000-000000000000/output.npy", "/v1/jobs/not-a-job/kernel.npy"):
        unknown = client.get(path)
        assert unknown.status_code == 404 and unknown.mimetype == "application/problem+json"
    job = correlate(client, {"input": X_3X3, "kernel": K_2X2})
    other_kind = client.get(f"/v1/jobs/{job['id']}/kernel.npy")
    assert other_kind.status_code == 404 and "correlation" in other_kind.get_json()["detail"]


def test_npy_results_are_409_until_the_job_succeeded(client):
    from tests.test_jobs_api import slow_training

    job = slow_training(client)
    early = client.get(f"/v1/jobs/{job['id']}/kernel.npy")
    assert early.status_code == 409 and early.mimetype == "application/problem+json"
    assert early.headers.get("Retry-After")
    client.delete(f"/v1/jobs/{job['id']}")
    wait_for_job(client, job["id"])
    cancelled = client.get(f"/v1/jobs/{job['id']}/kernel.npy")
    assert cancelled.status_code == 409 and "cancelled" in cancelled.get_json()["detail"]


def test_accept_npy_on_the_job_gives_its_array(client):
    correlation = correlate(client, {"input": X_3X3, "kernel": K_2X2})
    npy_accepted = {"Accept": "application/x-npy"}
    assert load(client.get(f"/v1/jobs/{correlation['id']}", headers=npy_accepted)).tolist() == Y_3X3
    assert client.get(f"/v1/jobs/{correlation['id']}", headers={"Accept": "*/*"}).mimetype == "application/json"
    training = train(client, {"input": EDGE_IMAGE, "target": EDGES, "kernel_size": [1, 2]})
    kernel = load(client.get(f"/v1/jobs/{training['id']}", headers=npy_accepted))
    assert np.array_equal(kernel, np.array(training["result"]["kernel"], dtype=np.float32))


def test_a_waiting_submit_accepting_npy_answers_the_array_itself(client):
    headers = {"Accept": "application/x-npy", "Prefer": "wait=30"}
    response = post_form(client, CORRELATIONS, {"input": npy(X_3X3), "kernel": npy(K_2X2)}, headers)
    assert load(response).tolist() == Y_3X3 and response.headers["Location"].startswith("/v1/jobs/")
    failing = client.post(CORRELATIONS, json={"input": [[3e38, 3e38]], "kernel": [[3e38]]}, headers=headers)
    assert failing.status_code == 200 and failing.get_json()["status"] == "failed"  # no array: the job, as JSON
