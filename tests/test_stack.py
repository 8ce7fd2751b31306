"""Over real HTTP, against the stack as `make run` starts it: supervisord, embedded Redis, gunicorn and a worker."""

import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests
import torch

from shared.response_models import FINISHED
from tests.seed import EDGE_IMAGE, EDGES, K_2X2, Y_3X3
from tests.support import REPO, Stack, wait_until
from tests.test_operations import parse_metrics


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # One client opens 20 event streams below: more than its share of a process (MAX_HELD_REQUESTS_PER_CALLER,
    # 8 by default), which tests/test_limits.py tries.
    started = Stack(tmp_path_factory.mktemp("stack"), MAX_HELD_REQUESTS_PER_CALLER="24")
    yield started
    started.stop()


def test_stack_runs_the_seed_3x3_example(stack):
    job = stack.run_job("/v1/correlations", {"input": [[0, 1, 2], [3, 4, 5], [6, 7, 8]], "kernel": K_2X2})
    assert job["status"] == "succeeded" and job["result"]["output"] == Y_3X3


def test_stack_learns_the_edge_kernel_and_serves_its_loss_history(stack):
    job = stack.run_job("/v1/kernel-trainings", {"input": EDGE_IMAGE, "target": EDGES, "kernel_size": [1, 2]})
    assert job["status"] == "succeeded"
    assert job["result"]["kernel"][0] == pytest.approx([1, -1], abs=0.05)
    page = requests.get(f"{stack.url}/v1/jobs/{job['id']}/loss", params={"since": 10}, timeout=10).json()
    assert page["losses"] == job["result"]["loss_history"][10:]


def test_stack_answers_bad_input_with_problem_json(stack):
    response = requests.post(
        f"{stack.url}/v1/correlations", data=b"[" * 1000, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert response.status_code == 400 and response.headers["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize("pointed", ["CONVQ_URL", "--url"])
def test_make_demo_walks_through_the_seed_on_the_server_it_is_pointed_at(stack, pointed):
    env = os.environ | {"PORT": "1"}  # not HOST:PORT: CONVQ_URL, as the CLI reads it, or --url
    command = ["make", "--no-print-directory", "demo"]
    if pointed == "CONVQ_URL":
        env["CONVQ_URL"] = stack.url
    else:
        command.append(f"ARGS=--url {stack.url}")
    demo = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert demo.returncode == 0, demo.stderr
    out = demo.stdout
    assert "corr2d(X, K) =\n[[ 19.,  25.],\n [ 37.,  43.]]" in out
    assert "[[  0.,   1.,   0.,   0.,   0.,  -1.,   0.]," in out
    assert (
        "corr2d(X.t(), K)   (the vertical edges are gone) =\n"
        + "["
        + ",\n ".join(["[  0.,   0.,   0.,   0.,   0.]"] * 8)
        + "]"
        in out
    )
    losses = [float(line.rsplit(" ", 1)[1]) for line in out.splitlines() if line.startswith("epoch ")]
    assert len(losses) == 10 and losses == sorted(losses, reverse=True)
    learned = out.split("learned kernel =\n")[1].strip().strip("[]").split(",")
    assert [float(value) for value in learned] == pytest.approx([1, -1], abs=0.05)


def test_metrics_add_up_every_gunicorn_worker_and_count_jobs(stack):
    def scrape() -> dict[str, float]:
        return parse_metrics(requests.get(f"{stack.url}/metrics", timeout=10).text)

    healthz = 'convq_http_requests_total{method="GET",route="/healthz",status="200"}'
    before = scrape()
    for _ in range(40):
        requests.get(f"{stack.url}/healthz", timeout=10)  # a new connection each: gunicorn's workers share them
    first, second = scrape(), scrape()
    assert first[healthz] - before.get(healthz, 0) == 40 == second[healthz] - before.get(healthz, 0)
    stack.run_job("/v1/correlations", {"input": [[1, 2]], "kernel": [[1]]})
    after = scrape()
    finished = 'convq_jobs_finished_total{kind="correlation",status="succeeded"}'
    assert after[finished] - second.get(finished, 0) == 1


def test_logs_are_json_lines_that_follow_a_job_by_request_and_job_id(stack):
    response = requests.post(
        f"{stack.url}/v1/correlations",
        json={"input": [[1, 2]], "kernel": [[1]]},
        headers={"X-Request-ID": "trace-me-42"},
        timeout=10,
    )
    assert response.headers["X-Request-ID"] == "trace-me-42"
    job_id = response.json()["id"]
    wait_until(
        lambda: requests.get(stack.url + response.headers["Location"], timeout=10).json()["status"] == "succeeded",
        30,
        "the job",
    )

    def records(service: str) -> list[dict]:
        lines = [line for line in stack.log.read_text().splitlines() if line.startswith("{")]
        return [record for record in map(json.loads, lines) if record["service"] == service]

    def job_lines() -> list[dict]:
        return [record for record in records("worker") if record["job_id"] == job_id]

    wait_until(lambda: any("ended" in record["message"] for record in job_lines()), 10, "the worker's log lines")
    # Not on a terminal: JSON lines only, but for bin/run's line on starting and the ready line.
    plain = [line for line in stack.log.read_text().splitlines() if not line.startswith("{")]
    assert [line.split(":")[0] for line in plain] == ["starting convq", "convq is ready at http"], plain
    api = records("api")
    assert any(record["request_id"] == "trace-me-42" and record.get("route") == "/v1/correlations" for record in api)
    assert {record["request_id"] for record in job_lines()} == {"trace-me-42"}
    assert {record["service"] for record in job_lines()} == {"worker"}


def read_events(response: requests.Response):
    """Parse a text/event-stream as it arrives: yield {id, event, data} for each event."""
    event: dict = {}
    for line in response.iter_lines(decode_unicode=True):
        if not line:
            if "data" in event:
                yield event | {"data": json.loads(event["data"])}
            event = {}
        elif not line.startswith((":", "retry:")):
            name, _, value = line.partition(": ")
            event[name] = value


def events_url(stack: "Stack", job: dict) -> str:
    return f"{stack.url}/v1/jobs/{job['id']}/events"


def test_events_stream_every_epoch_and_resume_after_a_reconnect_without_gaps_or_repeats(stack):
    body = {"input": torch.rand((300, 300), generator=torch.Generator().manual_seed(1)).tolist()}
    body |= {"target_kernel": [[0.5, -0.5]] * 2, "lr": 1e-7, "epochs": 400}
    job = requests.post(f"{stack.url}/v1/kernel-trainings", json=body, timeout=10).json()
    seen = []
    with requests.get(events_url(stack, job), stream=True, timeout=30) as first:
        assert first.headers["Content-Type"].startswith("text/event-stream")
        for event in read_events(first):
            seen.append(event)
            if len(seen) == 25:
                break  # the client drops the connection mid-training
    assert [event["data"]["epoch"] for event in seen] == list(range(1, 26))
    headers = {"Last-Event-ID": seen[-1]["id"]}
    with requests.get(events_url(stack, job), stream=True, headers=headers, timeout=60) as second:
        rest = list(read_events(second))
    progress = [event for event in seen + rest if event["event"] == "progress"]
    assert [event["data"]["epoch"] for event in progress] == list(range(1, 401))
    assert all(event["data"]["epochs"] == 400 for event in progress)
    [final] = [event for event in rest if event["event"] == "status"]
    assert rest[-1] is final and final["data"]["status"] == "succeeded"
    assert final["data"]["result"]["loss_history"] == [event["data"]["loss"] for event in progress]


def test_a_client_arriving_after_the_job_finished_gets_the_final_event_at_once(stack):
    job = stack.run_job("/v1/kernel-trainings", {"input": EDGE_IMAGE, "target": EDGES, "kernel_size": [1, 2]})
    started = time.monotonic()
    with requests.get(events_url(stack, job), stream=True, timeout=10) as response:
        events = list(read_events(response))
    assert time.monotonic() - started < 2
    assert [event["event"] for event in events] == ["progress"] * 20 + ["status"]
    assert events[-1]["data"] == requests.get(f"{stack.url}/v1/jobs/{job['id']}", timeout=10).json()
    correlation = stack.run_job("/v1/correlations", {"input": [[1, 2]], "kernel": [[1]]})
    with requests.get(events_url(stack, correlation), stream=True, timeout=10) as response:
        assert [event["event"] for event in read_events(response)] == ["status"]


def test_twenty_open_streams_do_not_starve_other_requests(stack):
    training = {"input": [[0.5] * 100] * 100, "target_kernel": [[0.1] * 3] * 3, "lr": 1e-7, "epochs": 10_000}
    job = requests.post(f"{stack.url}/v1/kernel-trainings", json=training, timeout=10).json()
    streams = [requests.get(events_url(stack, job), stream=True, timeout=30) for _ in range(20)]
    try:
        for stream in streams:
            assert next(stream.iter_lines()) == b"retry: 1000"  # open and being served
        started = time.monotonic()
        posted = requests.post(
            f"{stack.url}/v1/correlations",
            json={"input": [[1, 2]], "kernel": [[1]]},
            headers={"Prefer": "wait=2"},
            timeout=10,
        )
        submit_and_wait = time.monotonic() - started
        started = time.monotonic()
        fetched = requests.get(stack.url + posted.headers["Location"], timeout=10)
        get = time.monotonic() - started
    finally:
        for stream in streams:
            stream.close()
        requests.delete(f"{stack.url}/v1/jobs/{job['id']}", timeout=10)
    print(f"\nwith 20 open streams: POST (Prefer: wait) {submit_and_wait * 1000:.0f} ms, GET {get * 1000:.0f} ms")
    assert posted.status_code == 200 and fetched.status_code == 200
    assert submit_and_wait < 2 and get < 1


def test_schemathesis_finds_nothing_in_the_api_it_describes(stack):
    """Fuzz every operation from /openapi.json: all default checks, positive and negative data (schemathesis.toml)."""
    command = [Path(sys.executable).parent / "schemathesis", "run", f"{stack.url}/openapi.json"]
    command += [
        "--max-examples",
        os.environ.get("FUZZ_EXAMPLES", "25"),
        "--seed",
        "7",
        "--workers",
        "1",
    ]  # 2 threads tripped a CPython 3.11 ast bug in hypothesis
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    summary = [line for line in run.stdout.splitlines() if "generated" in line]
    print("\n" + "\n".join(summary))
    assert run.returncode == 0, run.stdout[-5000:]


def test_load_of_small_jobs_from_concurrent_clients_beside_a_saturating_training(stack):
    """LOAD_JOBS tiny jobs (2,000 by default) from 16 clients while a training keeps a worker process busy."""
    jobs, clients = int(os.environ.get("LOAD_JOBS", "2000")), 16
    generator = torch.Generator().manual_seed(0)
    training = {"input": torch.rand((300, 300), generator=generator).tolist(), "target_kernel": [[1.0] * 3] * 3}
    busy = requests.post(
        f"{stack.url}/v1/kernel-trainings", json={**training, "lr": 1e-7, "epochs": 10_000}, timeout=10
    )
    busy_url = stack.url + busy.headers["Location"]
    wait_until(lambda: requests.get(busy_url, timeout=10).json()["status"] == "running", 30, "the training to run")

    statuses, get_latencies = collections.Counter(), []

    def client(numbers: range) -> dict[int, dict]:
        session, finished = requests.Session(), {}
        for number in numbers:
            response = session.post(
                f"{stack.url}/v1/correlations", json={"input": [[float(number), 1.0]], "kernel": [[2.0]]}, timeout=30
            )
            statuses[response.status_code] += 1
            location = stack.url + response.headers["Location"]
            while True:
                started = time.perf_counter()
                response = session.get(location, timeout=30)
                get_latencies.append(time.perf_counter() - started)
                statuses[response.status_code] += 1
                if response.json()["status"] in FINISHED:
                    finished[number] = response.json()
                    break
                time.sleep(0.01)
        return finished

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = {}
        for finished in pool.map(client, [range(i, jobs, clients) for i in range(clients)]):
            results |= finished
    elapsed = time.perf_counter() - started
    requests.delete(busy_url, timeout=10)

    p50, p99 = statistics.quantiles(get_latencies, n=100)[49], statistics.quantiles(get_latencies, n=100)[98]
    print(
        f"\n{jobs} jobs from {clients} clients in {elapsed:.1f} s ({jobs / elapsed:.0f} jobs/s) beside a training; "
        f"GET p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms over {len(get_latencies)} GETs"
    )
    assert set(statuses) <= {200, 202}, statuses
    assert sorted(results) == list(range(jobs))
    assert len({job["id"] for job in results.values()}) == jobs
    for number, job in results.items():
        assert job["status"] == "succeeded" and job["attempts"] == 1
        assert job["result"]["output"] == [[2.0 * number, 2.0]]
    assert p99 < 2.0


def test_sigterm_stops_every_process_the_stack_started(stack):
    children = psutil.Process(stack.process.pid).children(recursive=True)
    commands = " ".join(" ".join(child.cmdline()) for child in children)
    assert "redis-server" in commands and "gunicorn" in commands and "celery" in commands
    stack.process.send_signal(signal.SIGTERM)
    assert stack.process.wait(60) == 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []
