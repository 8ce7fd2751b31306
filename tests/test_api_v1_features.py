"""What grows on the core contract: waiting submits, idempotency, lists, expiry, limits, API keys, rate limits."""

import dataclasses
import io
import re
import threading
import time
from datetime import datetime, timedelta

import pytest
from PIL import Image

from api import create_app, parameters, problems
from shared.jobstore import JobKeys, idempotency_key_for
from shared.request_models import CorrelationRequest, KernelTrainingRequest
from shared.settings import Settings
from shared.startup import warn_if_open
from tests.seed import EDGE_IMAGE, EDGE_KERNEL, K_2X2, X_3X3, Y_3X3
from tests.support import RedisServer, wait_for_job

pytestmark = pytest.mark.usefixtures("worker")

TINY = {"input": X_3X3, "kernel": K_2X2}
SLOW = {"input": [[0.5] * 100] * 100, "target_kernel": [[0.1] * 3] * 3, "lr": 1e-7, "epochs": 100_000}


def test_prefer_wait_answers_200_with_the_finished_job(client):
    response = client.post("/v1/correlations", json=TINY, headers={"Prefer": "wait=5"})
    assert response.status_code == 200 and response.headers["Preference-Applied"] == "wait=5"
    job = response.get_json()
    assert job["status"] == "succeeded" and job["result"]["output"] == Y_3X3
    assert "Retry-After" not in response.headers and response.headers["Location"] == f"/v1/jobs/{job['id']}"


def test_prefer_wait_gives_up_with_a_202_and_is_capped(client):
    started = time.monotonic()
    response = client.post("/v1/kernel-trainings", json=SLOW, headers={"Prefer": "respond-async, wait=1"})
    waited = time.monotonic() - started
    assert response.status_code == 202 and response.get_json()["status"] in ("queued", "running")
    assert response.headers["Preference-Applied"] == "wait=1" and 1 <= waited < 3
    client.delete(response.headers["Location"])
    capped = client.post("/v1/correlations", json=TINY, headers={"Prefer": "wait=3600"})
    assert capped.headers["Preference-Applied"] == "wait=5"  # MAX_WAIT_SECONDS in the suite


def test_twenty_concurrent_identical_posts_with_one_key_make_one_job(app, worker):
    body = {"input": [[7.0, 1.0]], "kernel": [[3.0]]}
    responses, barrier = [], threading.Barrier(20)

    def post():
        client = app.test_client()
        barrier.wait()
        responses.append(client.post("/v1/correlations", json=body, headers={"Idempotency-Key": "order-1234"}))

    threads = [threading.Thread(target=post) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = {response.get_json()["id"] for response in responses}
    assert len(ids) == 1 and all(response.status_code in (200, 202) for response in responses)
    assert sum("Idempotent-Replayed" not in response.headers for response in responses) == 1
    [job_id] = ids
    job = wait_for_job(app.test_client(), job_id)
    assert job["result"]["output"] == [[21.0, 3.0]]
    time.sleep(0.5)
    received = [line for line in worker.log_path.read_text().splitlines() if job_id in line and "received" in line]
    assert len(received) == 1  # one Celery message


def test_an_idempotency_key_reused_for_another_body_is_422(client):
    client.post("/v1/correlations", json=TINY, headers={"Idempotency-Key": "reused-key"})
    response = client.post("/v1/correlations", json={**TINY, "bias": 1.0}, headers={"Idempotency-Key": "reused-key"})
    assert response.status_code == 422 and response.get_json()["errors"][0]["loc"] == "/Idempotency-Key"
    assert client.post("/v1/correlations", json=TINY, headers={"Idempotency-Key": "bad key"}).status_code == 400


def test_jobs_are_listed_newest_first_with_a_cursor_and_filters(client):
    ids = [client.post("/v1/correlations", json=TINY).get_json()["id"] for _ in range(3)]
    training = client.post("/v1/kernel-trainings", json={"input": EDGE_IMAGE, "target_kernel": EDGE_KERNEL})
    first = client.get("/v1/jobs?limit=2").get_json()
    assert [job["id"] for job in first["jobs"]] == [training.get_json()["id"], ids[2]]
    assert all("result" not in job for job in first["jobs"])
    second = client.get(f"/v1/jobs?limit=2&cursor={first['next_cursor']}").get_json()
    assert [job["id"] for job in second["jobs"]] == [ids[1], ids[0]]
    trainings = client.get("/v1/jobs?kind=kernel_training&limit=1").get_json()
    assert trainings["jobs"][0]["id"] == training.get_json()["id"]
    for id_ in ids:
        wait_for_job(client, id_)
    succeeded = client.get("/v1/jobs?status=succeeded&kind=correlation&limit=3").get_json()["jobs"]
    assert [job["id"] for job in succeeded] == ids[::-1]
    for bad in ("limit=0", "limit=101", "limit=²", "status=done", "kind=conv", "cursor=abc"):
        assert client.get(f"/v1/jobs?{bad}").status_code == 400


def test_every_job_shows_when_it_expires(client, settings):
    job = client.post("/v1/correlations", json=TINY).get_json()
    created = datetime.fromisoformat(job["created_at"])
    expires = datetime.fromisoformat(job["expires_at"])
    assert abs(expires - created - timedelta(seconds=settings.job_ttl_seconds)) < timedelta(seconds=2)


def test_the_work_budget_is_checked_before_anything_is_queued(settings):
    client = create_app(settings.model_copy(update={"max_work": 1000})).test_client()
    response = client.post(
        "/v1/kernel-trainings", json={"input": EDGE_IMAGE, "target_kernel": EDGE_KERNEL, "epochs": 100}
    )
    assert response.status_code == 422
    [error] = response.get_json()["errors"]
    assert error["loc"] == "" and "MAX_WORK" in error["msg"] and "8400 multiply-adds" in error["msg"]
    pairs = [{"input": EDGE_IMAGE}] * 3  # 6 x 7 outputs x 2 taps x 30 epochs x 3 pairs: 7560
    response = client.post("/v1/kernel-trainings", json={"pairs": pairs, "target_kernel": EDGE_KERNEL, "epochs": 30})
    assert response.status_code == 422 and "(30 epochs x 3 pairs)" in response.get_json()["errors"][0]["msg"]
    under = client.post("/v1/kernel-trainings", json={"pairs": pairs[:2], "target_kernel": EDGE_KERNEL, "epochs": 2})
    assert under.status_code == 202


@pytest.fixture
def private_redis(tmp_path):
    """A Redis of this test's own, with no worker: queued jobs stay queued."""
    redis = RedisServer(tmp_path).start()
    yield redis
    redis.stop()


def test_a_full_queue_answers_429_with_retry_after(private_redis):
    client = create_app(Settings(redis_url=private_redis.url, max_queue_length=2)).test_client()
    assert [client.post("/v1/correlations", json=TINY).status_code for _ in range(2)] == [202, 202]
    full = client.post("/v1/correlations", json=TINY)
    assert full.status_code == 429 and full.headers["Retry-After"] == "5"
    assert "MAX_QUEUE_LENGTH" in full.get_json()["detail"]


def test_api_keys_guard_every_v1_route_and_each_key_sees_only_its_jobs(private_redis, capsys):
    keys = {"alice": "alice-secret-key", "bob": "bob-secret-key"}
    client = create_app(Settings(redis_url=private_redis.url, api_keys=keys)).test_client()
    alice, bob = ({"Authorization": f"Bearer {key}"} for key in keys.values())

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic alice-secret-key"}):
        refused = client.post("/v1/correlations", json=TINY, headers=headers)
        assert refused.status_code == 401 and refused.mimetype == "application/problem+json"
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/healthz").status_code == 200  # service endpoints stay open

    job_id = client.post("/v1/correlations", json=TINY, headers=alice).get_json()["id"]
    assert client.get(f"/v1/jobs/{job_id}", headers=alice).status_code == 200
    for suffix in ("", "/loss", "/events", "/output.npy", "/kernel.npy", "/output.png"):
        assert client.get(f"/v1/jobs/{job_id}{suffix}", headers=bob).status_code == 404
    assert client.delete(f"/v1/jobs/{job_id}", headers=bob).status_code == 404
    assert client.get("/v1/jobs", headers=bob).get_json()["jobs"] == []
    assert [job["id"] for job in client.get("/v1/jobs", headers=alice).get_json()["jobs"]] == [job_id]
    logged = capsys.readouterr().err
    assert "alice-secret-key" not in logged and "bob-secret-key" not in logged


def test_without_keys_the_service_says_it_is_open(caplog):
    warn_if_open(Settings(api_keys={"alice": "alice-key"}))
    assert caplog.records == []
    warn_if_open(Settings())
    [record] = caplog.records
    assert record.levelname == "WARNING" and "API keys are off" in record.getMessage()


def test_submissions_are_rate_limited_per_key(private_redis):
    keys = {"alice": "alice-key", "bob": "bob-key"}
    settings = Settings(redis_url=private_redis.url, api_keys=keys, submit_rate_limit="3/minute")
    client = create_app(settings).test_client()
    alice, bob = ({"Authorization": f"Bearer {key}"} for key in keys.values())
    statuses = [client.post("/v1/correlations", json=TINY, headers=alice).status_code for _ in range(4)]
    assert statuses == [202, 202, 202, 429]
    limited = client.post("/v1/kernel-trainings", json=SLOW, headers=alice)  # one budget for both kinds
    assert limited.status_code == 429 and limited.mimetype == "application/problem+json"
    assert int(limited.headers["Retry-After"]) > 0
    assert client.post("/v1/correlations", json=TINY, headers=bob).status_code == 202  # bob has his own
    assert client.get("/v1/jobs", headers=alice).status_code == 200  # reads are not limited


def test_without_keys_each_client_address_has_its_own_submission_budget(private_redis):
    client = create_app(Settings(redis_url=private_redis.url, submit_rate_limit="2/minute")).test_client()
    first, second = ({"REMOTE_ADDR": address} for address in ("192.0.2.1", "192.0.2.2"))
    assert [client.post("/v1/correlations", json=TINY, environ_base=first).status_code for _ in range(3)] == [
        202,
        202,
        429,
    ]
    assert client.post("/v1/correlations", json=TINY, environ_base=second).status_code == 202


def test_an_event_stream_closes_after_its_lifetime_and_the_client_resumes(settings):
    client = create_app(settings.model_copy(update={"max_stream_seconds": 1})).test_client()
    job = client.post("/v1/kernel-trainings", json=SLOW).get_json()
    started = time.monotonic()
    body = client.get(f"/v1/jobs/{job['id']}/events").get_data(as_text=True)  # the whole stream, until it ends
    assert 1 <= time.monotonic() - started < 5
    assert body.startswith("retry: 1000") and "event: progress" in body and "event: status" not in body
    last_id = [line for line in body.splitlines() if line.startswith("id: ")][-1].removeprefix("id: ")
    again = client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": last_id}).get_data(as_text=True)
    first_epoch_again = int(
        next(line for line in again.splitlines() if line.startswith("id: ")).split()[1].split("-")[0]
    )
    assert first_epoch_again == int(last_id.split("-")[0]) + 1
    client.delete(f"/v1/jobs/{job['id']}")


@pytest.mark.parametrize("last_id", ["abc", "1-2-3", "20000000000000000000", "1-18446744073709551616"])
def test_a_last_event_id_that_redis_would_refuse_is_a_400(client, last_id):
    job = client.post("/v1/correlations", json={"input": X_3X3, "kernel": K_2X2}).get_json()
    response = client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": last_id})
    assert response.status_code == 400 and response.mimetype == "application/problem+json"
    assert response.get_json()["errors"][0]["loc"] == "/Last-Event-ID"


def test_a_quiet_stream_sends_keep_alives(private_redis):
    client = create_app(Settings(redis_url=private_redis.url, max_stream_seconds=1)).test_client()
    job = client.post("/v1/correlations", json=TINY).get_json()  # no worker here: it stays queued, silent
    body = client.get(f"/v1/jobs/{job['id']}/events").get_data(as_text=True)
    assert body == "retry: 1000\n\n: keep-alive\n\n"


def test_an_idempotency_key_lives_as_long_as_its_job(private_redis):
    client = create_app(Settings(redis_url=private_redis.url, job_ttl_seconds=60)).test_client()
    job = client.post("/v1/correlations", json=TINY, headers={"Idempotency-Key": "expiring"}).get_json()
    redis = private_redis.client()
    [key] = list(redis.scan_iter(idempotency_key_for("*", "*")))
    record = JobKeys.of(job["id"]).record
    assert 55 < redis.ttl(key) <= 60 and abs(redis.ttl(key) - redis.ttl(record)) <= 1


def test_the_interactive_docs_work_offline(client):
    page = client.get("/docs").get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets and all(asset.startswith("/static/") for asset in assets)  # no CDN
    for asset in assets:
        assert client.get(asset).status_code == 200
    document = client.get("/openapi.json").get_json()
    assert document["openapi"] == "3.1.0" and "Problem" in document["components"]["schemas"]
    icon = client.get("/favicon.ico")  # browsers ask for it unless a page names its icon
    assert icon.status_code == 200 and icon.mimetype == "image/vnd.microsoft.icon"
    with Image.open(io.BytesIO(icon.data)) as picture:
        assert picture.format == "ICO" and picture.convert("RGB").getpixel((24, 24)) == (0xFD, 0xE7, 0x25)
    headers = {p["name"] for p in document["paths"]["/v1/correlations"]["post"]["parameters"]}
    assert headers == {"Idempotency-Key", "Prefer"}


def test_every_v1_route_and_method_is_in_the_openapi_document(app, client):
    documented = client.get("/openapi.json").get_json()["paths"]
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/v1"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        formats = re.search(r"<any\(([^)]*)\):\w+>", rule.rule)
        choices = [] if formats is None else [choice.strip() for choice in formats.group(1).split(",")]
        for concrete in [path.replace(formats.group(0), choice) for choice in choices] if formats else [path]:
            methods = rule.methods - {"HEAD", "OPTIONS"}
            assert methods <= {method.upper() for method in documented.get(concrete, {})}, concrete


def test_every_json_answer_ends_with_a_newline(client):
    job = client.post("/v1/correlations", json={"input": X_3X3, "kernel": K_2X2}, headers={"Prefer": "wait=5"})
    answers = [
        job,
        client.get(f"/v1/jobs/{job.get_json()['id']}"),
        client.get("/v1/jobs?limit=1"),
        client.get("/v1/kernels"),
        client.get("/healthz"),
        client.get("/openapi.json"),
        client.post("/v1/correlations", json={"input": [[1]]}),  # 422 problem+json
        client.get("/v1/no-such-route"),  # 404 problem+json
    ]
    for answer in answers:
        assert answer.mimetype in ("application/json", "application/problem+json")
        assert answer.data.endswith(b"}\n") and not answer.data.endswith(b"\n\n"), answer.request.path


def test_the_openapi_document_says_its_limits_in_json_schema_words(client):
    """minimum and maximum (pydantic's own ge and le mean nothing to a schema reader), and no boolean schemas,
    which client generators refuse."""
    found = []

    def walk(node, path: str) -> None:
        if isinstance(node, dict):
            found.extend(f"{path}/{key}" for key in ("ge", "le", "gt", "lt") if key in node)
            found.extend(f"{path}/{key}" for key, value in node.items() if isinstance(value, bool) and key == "items")
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}/{index}")

    document = client.get("/openapi.json").get_json()
    walk(document, "")
    assert found == []
    epochs = document["components"]["schemas"]["KernelTrainingRequest"]["properties"]["epochs"]
    assert epochs["minimum"] == 1


def test_a_limit_changed_in_one_place_changes_the_route_and_the_document(settings, monkeypatch):
    """The routes and openapi.build read the same definitions: no limit is typed into the document by hand."""
    monkeypatch.setattr(parameters, "PAGE_LIMIT", dataclasses.replace(parameters.PAGE_LIMIT, high=5))
    monkeypatch.setattr(parameters, "SINCE", dataclasses.replace(parameters.SINCE, high=7))
    monkeypatch.setattr(problems, "MAX_URL_LENGTH", 300)
    client = create_app(settings).test_client()
    assert client.get("/v1/jobs?limit=5").status_code == 200
    refused = client.get("/v1/jobs?limit=6")
    assert refused.status_code == 400 and "from 1 to 5" in refused.get_json()["detail"]
    assert client.get("/healthz?" + "x" * 300).status_code == 414
    paths = client.get("/openapi.json").get_json()["paths"]
    [limit] = [p for p in paths["/v1/jobs"]["get"]["parameters"] if p["name"] == "limit"]
    [since] = paths["/v1/jobs/{job_id}/loss"]["get"]["parameters"]
    assert (limit["schema"]["maximum"], since["schema"]["maximum"]) == (5, 7)
    assert paths["/healthz"]["get"]["responses"]["414"]["description"] == "URL over 300 characters"


def test_the_image_form_is_documented_from_the_request_model(client):
    """Every field of the request models is a field of their forms, and no other but the image and the JSON part."""
    paths = client.get("/openapi.json").get_json()["paths"]
    for path, model, extra in (
        ("/v1/correlations", CorrelationRequest, {"image", "request"}),
        ("/v1/kernel-trainings", KernelTrainingRequest, {"request"}),
    ):
        properties = paths[path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
        assert set(properties) == set(model.model_fields) | extra
        assert properties["input"]["format"] == "binary"
