"""Big jobs yield the cores to small ones: their threads run at a lower priority, then take their own back."""

import os
import resource
import socket
import subprocess
import sys
import threading
from urllib.parse import urlparse

import numpy as np
import psutil
import requests

from shared.priority import lowered
from tests.support import REPO, wait_until

NICENESS = 10  # BIG_WORK_NICENESS's default, as the live stack runs


def niceness_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_a_thread_runs_lowered_for_the_block_alone_and_the_others_not_at_all():
    seen = {}

    def big_work() -> None:
        with lowered(NICENESS):
            seen["inside"] = niceness_of_this_thread()
            seen["main thread meanwhile"] = os.getpriority(os.PRIO_PROCESS, main)
        seen["after"] = niceness_of_this_thread()

    main, own = threading.get_native_id(), niceness_of_this_thread()
    worker = threading.Thread(target=big_work)
    worker.start()
    worker.join()
    assert seen == {"inside": own + NICENESS, "main thread meanwhile": own, "after": own}


def test_a_process_that_could_not_take_its_priority_back_lowers_none():
    # Without CAP_SYS_NICE and with an RLIMIT_NICE of 0 (an unprivileged process's usual lot), a lowered thread
    # could never take its priority back: nothing is lowered, and one log line says why.
    code = (
        "import logging, os, threading; logging.basicConfig(level=logging.INFO)\n"
        "from shared.priority import can_take_back, lowered\n"
        "with lowered(10):\n"
        "    print(can_take_back(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))\n"
    )
    result = subprocess.run(
        ["setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice", sys.executable, "-c", code],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NICE, (0, 0)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "0"]
    assert "big jobs run at the same priority as small ones" in result.stderr


def niced_threads(stack_process: subprocess.Popen, program: str) -> list[int]:
    """The threads of the stack's `program` processes (gunicorn, celery) running at a lowered priority."""
    found = []
    for process in psutil.Process(stack_process.pid).children(recursive=True):
        try:
            if program in " ".join(process.cmdline()):
                found += [thread.id for thread in process.threads() if psutil.Process(thread.id).nice() > 0]
        except psutil.NoSuchProcess:
            continue
    return found


def test_the_api_reads_a_big_body_at_a_lowered_priority_then_takes_its_own_back(live_stack):
    address = urlparse(live_stack.url)
    head = (
        "POST /v1/correlations HTTP/1.1\r\nHost: convq\r\nContent-Type: application/json\r\n"
        "Content-Length: 200000\r\n\r\n"
    )
    assert niced_threads(live_stack.process, "gunicorn") == []
    with socket.create_connection((address.hostname, address.port), timeout=10) as client:
        client.sendall(head.encode() + b'{"input": [[')  # the rest of the body never comes
        niced = wait_until(lambda: niced_threads(live_stack.process, "gunicorn"), 10, "the API thread to yield")
        assert len(niced) == 1
    wait_until(lambda: not niced_threads(live_stack.process, "gunicorn"), 10, "the API thread to take its own back")
    small = requests.post(f"{live_stack.url}/v1/correlations", json={"input": [[1.0]], "kernel": [[2.0]]}, timeout=10)
    assert small.status_code == 202 and niced_threads(live_stack.process, "gunicorn") == []


def test_a_worker_runs_a_big_job_at_a_lowered_priority_and_a_small_one_at_its_own(live_stack):
    big_input = np.random.default_rng(0).random((129, 129), dtype=np.float32)  # 66,564 bytes: over 64 KiB
    body = {"input": big_input.tolist(), "target_kernel": [[1.0, -1.0]], "epochs": 10_000, "lr": 1e-4}
    job = requests.post(f"{live_stack.url}/v1/kernel-trainings", json=body, timeout=30).json()
    job_url = f"{live_stack.url}/v1/jobs/{job['id']}"
    try:
        niced = wait_until(lambda: niced_threads(live_stack.process, "celery"), 30, "the big job's thread to yield")
        assert len(niced) == 1
    finally:
        requests.delete(job_url, timeout=10)
    wait_until(lambda: requests.get(job_url, timeout=10).json()["status"] == "cancelled", 30, "the cancel")
    wait_until(lambda: not niced_threads(live_stack.process, "celery"), 10, "the worker to take its own back")
    small = {"input": [[1.0] * 8] * 8, "target_kernel": [[1.0, -1.0]], "epochs": 10_000, "lr": 1e-4}
    submitted = requests.post(f"{live_stack.url}/v1/kernel-trainings", json=small, timeout=30).json()
    job_url = f"{live_stack.url}/v1/jobs/{submitted['id']}"
    seen_running = []
    while (status := requests.get(job_url, timeout=10).json()["status"]) in ("queued", "running"):
        if status == "running":
            seen_running.append(niced_threads(live_stack.process, "celery"))
    assert seen_running and not any(seen_running), seen_running
