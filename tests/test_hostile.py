"""Hostile bodies, internal errors, pickled messages and expiry: nothing crashes, leaks or lingers."""

import json
import os
import time

import orjson
import pytest
import torch
from kombu import Connection

from api import create_app
from shared.jobstore import JobStore, job_keys_pattern
from shared.packing import pack_request
from shared.request_models import CorrelationRequest
from tests.support import wait_until

TEN_MB = 10 * 1024 * 1024
JSON = {"Content-Type": "application/json"}

HOSTILE = [
    ("nesting 300 deep", b"[" * 300 + b"]" * 300, JSON, 400),
    ("10 MB string for a matrix", orjson.dumps({"input": "x" * TEN_MB, "kernel": [[1]]}), JSON, 422),
    ("10 MB key", b'{"' + b"k" * TEN_MB + b'": 1, "input": [[1]], "kernel": [[1]]}', JSON, 422),
    ("10 MB of digits", b'{"input": [[' + b"9" * TEN_MB + b'.5]], "kernel": [[1]]}', JSON, 400),
    ("invalid UTF-8", b'{"input": "\xc3\x28"}', JSON, 400),
    ("duplicate keys", b'{"input": [[1]], "kernel": [[1]], "kernel": [[2]]}', JSON, 400),
    ("NaN", b'{"input": [[NaN]], "kernel": [[1]]}', JSON, 400),
    ("Infinity", b'{"input": [[-Infinity]], "kernel": [[1]]}', JSON, 400),
    ("1e999", b'{"input": [[1e999]], "kernel": [[1]]}', JSON, 422),
    ("numbers as strings", b'{"input": [["1", "2"]], "kernel": [["1"]]}', JSON, 422),
    ("wrong content type", b'{"input": [[1]], "kernel": [[1]]}', {"Content-Type": "text/csv"}, 415),
    ("form instead of JSON", b"input=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ("empty body", b"", JSON, 400),
    ("body over the limit", b" " * (16 * 1024 * 1024 + 1), JSON, 413),
]


@pytest.fixture(scope="module")
def big_body_client(settings):
    """The API with a body limit (16 MiB) that lets 10 MB strings reach the parser."""
    return create_app(settings.model_copy(update={"max_body_bytes": 16 * 1024 * 1024})).test_client()


@pytest.mark.parametrize("name,body,headers,status", HOSTILE, ids=[case[0] for case in HOSTILE])
def test_hostile_bodies_get_a_quick_problem_never_a_500(big_body_client, name, body, headers, status):
    started = time.monotonic()
    response = big_body_client.post("/v1/correlations", data=body, headers=headers)
    elapsed = time.monotonic() - started
    assert response.status_code == status, response.get_data()[:500]
    assert response.mimetype == "application/problem+json"
    assert len(response.get_data()) < 10_000  # a fault is named, never echoed back
    assert elapsed < 0.2, f"{name}: {elapsed * 1000:.0f} ms"


def test_an_internal_error_is_an_opaque_500_whose_id_leads_to_the_logged_traceback(settings, capsys):
    app = create_app(settings)

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret token 1234 in /srv/convq/api/v1.py")

    response = app.test_client().get("/boom")
    assert response.status_code == 500 and response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["instance"].startswith("urn:uuid:")
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and "secret" not in text and "/srv" not in text and "RuntimeError" not in text
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    [logged] = [line for line in lines if problem["instance"] in line["message"]]
    assert logged["level"] == "ERROR" and "secret token 1234" in logged["exc_info"]
    assert logged["request_id"] == response.headers["X-Request-ID"]


class Canary:
    """Unpickling this creates the canary file: proof that a worker deserialized pickle."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_a_pickled_message_is_refused_and_never_executed(settings, worker, client, tmp_path):
    canary = tmp_path / "canary"
    with Connection(settings.redis_url) as connection:
        producer = connection.Producer(serializer="pickle")
        headers = {"lang": "py", "task": "convq.correlate", "id": "pickle-canary", "argsrepr": "", "kwargsrepr": ""}
        producer.publish(([Canary(str(canary))], {}, {}), routing_key="celery", headers=headers)

    refused = "Refusing to deserialize untrusted content of type pickle"
    wait_until(lambda: refused in worker.log_path.read_text(), 20, "the worker to refuse the message")
    response = client.post("/v1/correlations", json={"input": [[1, 2]], "kernel": [[1]]})  # and it goes on serving
    job_id = response.get_json()["id"]
    wait_until(
        lambda: client.get(f"/v1/jobs/{job_id}").get_json()["status"] == "succeeded", 20, "a job after the pickle"
    )
    assert not canary.exists()


def test_records_results_and_histories_expire_on_schedule_then_404(redis_server, client):
    store = JobStore(redis_server.client(), ttl_seconds=1)
    request = pack_request(CorrelationRequest.model_validate({"input": [[1.0]], "kernel": [[1.0]]}))
    job_id = store.create("kernel_training", request, "anonymous", epochs=1)[0]["id"]
    attempt = store.start(job_id, "cpu")
    store.record_epochs(attempt, 1, [0.25])
    store.succeed(attempt, b'{"kernel": [[1.0]]}')
    redis = redis_server.client()
    keys = list(redis.scan_iter(job_keys_pattern(job_id)))
    assert len(keys) == 4 and all(
        0 < redis.pttl(key) <= 1000 for key in keys
    )  # record, result, losses, events (the request's arrays went as the job ended)
    assert client.get(f"/v1/jobs/{job_id}").status_code == 200

    wait_until(lambda: not list(redis.scan_iter(job_keys_pattern(job_id))), 5, "the keys to expire")
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/loss"):
        response = client.get(path)
        assert response.status_code == 404 and "expired" in response.get_json()["detail"]


def test_each_pool_child_takes_its_share_of_the_cores():
    from worker.celery_app import _size_torch_threads, app

    before = torch.get_num_threads()
    try:
        app.conf.worker_concurrency = 2
        _size_torch_threads()
        assert torch.get_num_threads() == max(1, (os.cpu_count() or 1) // 2)
    finally:
        torch.set_num_threads(before)


def test_an_overlong_url_is_a_414_problem_not_gunicorns_html(client):
    for path in ("/healthz?x=", "/v1/jobs?cursor="):
        response = client.get(path + "9" * 9000)
        assert response.status_code == 414 and response.mimetype == "application/problem+json"
        assert response.headers["X-Request-ID"]
