"""`make run` as a person runs it, in a terminal (a pseudo-terminal): what it prints, what it restarts, Ctrl-C.

One stack for the whole module: it is started once, looked at, one of its processes is killed, and then a
Ctrl-C stops it while a training runs.
"""

import os
import re
import signal
import sys
import time
from pathlib import Path

import pexpect
import psutil
import pytest
import requests

from shared.taskqueue import QUEUE_NAMES
from tests.support import REPO, RedisServer, free_port, wait_until

GRACE_SECONDS = 2
# 450 x 450 at lr 1e-7 for 10,000 epochs (just under MAX_WORK): ~8 s, longer than the grace, so the worker hands
# it back to the queue.
# Far longer than the grace, also when the API's stop comes first: ~0.3 ms an epoch, over 15 s in all.
LONG_TRAINING = {"input": [[0.5] * 200] * 200, "target_kernel": [[0.1] * 3] * 3, "lr": 1e-7, "epochs": 50_000}


@pytest.fixture(scope="module")
def terminal(tmp_path_factory):
    """`make run` in a pseudo-terminal, up to its ready line; its output kept in screen.log.

    Stopped with a SIGTERM to supervisord if a test left it up."""
    workdir = tmp_path_factory.mktemp("make-run")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "LOG_FORMAT")}
    env |= {
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "REDIS_DIR": str(workdir / "redis"),
        "SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        "MAX_EPOCHS": str(LONG_TRAINING["epochs"]),
        "PATH": f"{Path(sys.executable).parent}:{env['PATH']}",
    }
    screen = open(workdir / "screen.log", "w", buffering=1)  # noqa: SIM115 - open as long as the module's tests
    child = pexpect.spawn("make", ["run"], cwd=REPO, env=env, encoding="utf-8", timeout=120, dimensions=(50, 200))
    child.logfile_read = screen
    child.url, child.workdir, child.screen = f"http://127.0.0.1:{port}", workdir, workdir / "screen.log"
    child.supervisor_log = REPO / ".run" / f"supervisord-{port}.log"
    child.supervisor_pid = REPO / ".run" / f"supervisord-{port}.pid"
    child.ready_line = f"convq is ready at {child.url} (Ctrl-C to stop)"
    child.expect_exact(child.ready_line)
    yield child
    if child.isalive():
        os.kill(int(child.supervisor_pid.read_text()), signal.SIGTERM)
        child.expect(pexpect.EOF, timeout=60)
    child.close()
    screen.close()


def programs(terminal) -> dict[str, psutil.Process]:
    """The processes supervisord started, by program: redis, worker (celery's main process), api (gunicorn's)."""
    found = {}
    for process in psutil.Process(int(terminal.supervisor_pid.read_text())).children():
        try:
            command = " ".join(process.cmdline())
        except psutil.ZombieProcess:  # exited, not yet reaped by supervisord
            continue
        for name, marker in (("redis", "redis-server"), ("worker", "celery"), ("api", "gunicorn")):
            if marker in command:
                found[name] = process
    return found


def test_make_run_says_when_it_is_ready_and_logs_text_on_a_terminal(terminal):
    shown = terminal.screen.read_text()
    assert shown.count(terminal.ready_line) == 1
    assert requests.get(f"{terminal.url}/readyz", timeout=5).status_code == 200
    assert re.search(r"^\d\d:\d\d:\d\d api +INFO +gunicorn\.error: Listening at", shown, re.MULTILINE), shown
    assert re.search(r"^\d\d:\d\d:\d\d worker +INFO .*ready", shown, re.MULTILINE), shown
    assert '{"level"' not in shown  # JSON lines are for machines, not for a terminal


def test_make_run_shows_each_warning_once_and_no_irrelevant_ones(terminal):
    shown = terminal.screen.read_text()
    assert shown.count("API keys are off") == 1
    for irrelevant in ("SecurityWarning", "superuser privileges", "overcommit", "running as root", "gunicorn.access"):
        assert irrelevant not in shown


def test_make_run_restarts_a_process_that_exits_and_keeps_the_others(terminal):
    before = programs(terminal)
    old_workers = before["api"].children()
    before["api"].kill()  # SIGKILL: no clean exit
    assert psutil.wait_procs(old_workers, timeout=30)[1] == []  # gunicorn's workers leave when their master is gone
    wait_until(lambda: programs(terminal).get("api", before["api"]).pid != before["api"].pid, 30, "a new API")

    def ready() -> bool:
        try:
            return requests.get(f"{terminal.url}/readyz", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(ready, 60, "the restarted API to answer", interval=0.5)
    after = programs(terminal)
    assert after["redis"].pid == before["redis"].pid and after["worker"].pid == before["worker"].pid


def test_ctrl_c_stops_api_then_worker_with_its_grace_then_redis_and_make_exits_0(terminal):
    submitted = requests.post(f"{terminal.url}/v1/kernel-trainings", json=LONG_TRAINING, timeout=30)
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    location = terminal.url + submitted.headers["Location"]
    wait_until(lambda: requests.get(location, timeout=10).json()["status"] == "running", 60, "the training to run")
    processes = list(programs(terminal).values())

    started = time.monotonic()
    terminal.sendintr()  # Ctrl-C: the terminal sends SIGINT to its foreground process group
    terminal.expect(pexpect.EOF, timeout=120)
    terminal.close()
    elapsed = time.monotonic() - started
    print(f"\nCtrl-C with a training running: make run exited {terminal.exitstatus} after {elapsed:.1f} s")

    assert terminal.exitstatus == 0 and terminal.signalstatus is None
    assert "Error" not in terminal.screen.read_text().split("convq is ready at")[-1]
    assert psutil.wait_procs(processes, timeout=5)[1] == []
    events = terminal.supervisor_log.read_text().split("received SIGINT")[1]  # the shutdown, after the kill above
    assert "SIGKILL" not in events and "killing" not in events
    stopped = [re.search(rf"stopped: {name} \(exit status 0\)", events) for name in ("api", "worker", "redis")]
    assert all(stopped), events
    assert stopped[0].start() < stopped[1].start() < stopped[2].start()  # API, then worker, then Redis
    assert GRACE_SECONDS <= elapsed < GRACE_SECONDS + 40

    # The worker handed the training back to the queue before Redis stopped: it is there in Redis's files.
    redis = RedisServer(terminal.workdir / "redis", append_only=True).start()
    try:
        queued = redis.client().lrange(QUEUE_NAMES["cpu"], 0, -1)
        assert any(job["id"].encode() in message for message in queued)
    finally:
        redis.stop()
