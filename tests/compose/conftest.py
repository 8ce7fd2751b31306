"""The compose stack for real: engine, images built from the Dockerfile, `docker compose up` as a user runs it.

The session copies the working tree to a temporary folder, writes `.env` from `.env.example` with a
random REDIS_PASSWORD (as the README tells a user to), builds the images and starts the stack under a
project name of its own, and takes it down with its volume at the end. `make compose-test` runs it.
"""

import contextlib
import os
import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.compose.engine import Engine, PipSettings, base_images, official_image, run, wait_healthy
from tests.support import REPO, free_port, wait_until

# Two checkouts may run their compose tests on one engine at once, each under a project name of its own.
PROJECT = os.environ.get("CONVQ_COMPOSE_PROJECT", "convq-compose-test")
FLOWER_LOGIN = "ops:" + secrets.token_hex(8)
# Short enough that a stopped worker hands its training back within the test; compose's default is 20 s.
SHUTDOWN_GRACE_SECONDS = 3
# Enough for a training that runs for seconds on a small input (tests/compose/test_compose.py).
MAX_EPOCHS = 100_000
REPORT: dict[str, str] = {}


class Compose:
    """`docker compose` on the copied tree, with its generated .env."""

    def __init__(self, tree: Path, env: dict[str, str], project: str = PROJECT, **overrides: str):
        """`overrides` take the place of .env's settings of the same name (compose prefers the environment's)."""
        self.tree, self.project = tree, project
        self.env = {**os.environ, **env, **overrides}
        self.settings = dict(re.findall(r"^(\w+)=(.*)$", (tree / ".env").read_text(), re.M)) | overrides
        self.api = f"http://127.0.0.1:{self.settings['API_PORT']}"

    def __call__(self, *args: str, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
        files = ["-f", "docker-compose.yml", "-f", "docker-compose.proxy.yml"]
        command = ["docker", "compose", "--project-name", self.project, *files, *args]
        return run(*command, cwd=self.tree, env={**self.env, **env}, timeout=timeout)

    def containers(self, service: str) -> list[str]:
        return self.__call__("ps", "--format", "{{.Name}}", service).stdout.split()

    def logs(self, *services: str) -> str:
        return self.__call__("logs", "--no-color", *services).stdout

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.api + path, timeout=10, **kwargs)

    def ready_workers(self) -> int:
        try:
            answer = self.get("/readyz")
        except requests.RequestException:
            return 0
        return answer.json()["workers"] if answer.status_code == 200 else 0


def copy_tree(target: Path) -> None:
    """The files a clone has (tracked, and new ones not ignored), as a user's checkout."""
    listed = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(source.read_bytes())
            (target / name).chmod(source.stat().st_mode)


def write_env(tree: Path, extra: dict[str, str]) -> None:
    """`cp .env.example .env`, a random REDIS_PASSWORD, free host ports, and the test's own settings."""
    text = (tree / ".env.example").read_text()
    text = re.sub(r"^REDIS_PASSWORD=$", f"REDIS_PASSWORD={secrets.token_hex(32)}", text, flags=re.M)
    values = {
        "API_PORT": str(free_port()),
        "FLOWER_PORT": str(free_port()),
        "SHUTDOWN_GRACE_SECONDS": str(SHUTDOWN_GRACE_SECONDS),
        "MAX_EPOCHS": str(MAX_EPOCHS),
        **extra,
    }
    for name, value in values.items():
        text, replaced = re.subn(rf"^#? ?{name}=.*$", f"{name}={value}", text, flags=re.M)
        if not replaced:
            text += f"{name}={value}\n"
    (tree / ".env").write_text(text)


@pytest.fixture(scope="session")
def engine(tmp_path_factory):
    started = Engine(tmp_path_factory.mktemp("engine")).start()
    yield started
    started.stop()


@pytest.fixture(scope="session")
def compose(engine, tmp_path_factory):
    tree = tmp_path_factory.mktemp("checkout")
    copy_tree(tree)
    pip = PipSettings(tmp_path_factory.mktemp("pip"))
    env = pip.start()
    write_env(tree, base_images())
    stack = Compose(tree, env)
    try:
        started = time.monotonic()
        stack("--profile", "monitoring", "build", timeout=1800)
        REPORT["build"] = f"{time.monotonic() - started:.0f} s"
        REPORT["images"] = image_sizes(stack.settings.get("PYTHON_IMAGE") or official_image("PYTHON_IMAGE"))
        started = time.monotonic()
        stack("up", "--detach")
        try:
            wait_until(stack.ready_workers, 180, "/readyz 200", 0.25)
        except TimeoutError as error:
            raise RuntimeError(f"{error}\n{stack('ps', '--all').stdout}\n{stack.logs()[-5000:]}") from None
        REPORT["ready"] = f"/readyz 200 after {time.monotonic() - started:.1f} s"
        wait_healthy(stack, 180)
        REPORT["healthy"] = f"every container healthy after {time.monotonic() - started:.1f} s"
        yield stack
    finally:
        with contextlib.suppress(RuntimeError):  # a failed teardown must not hide the failure that caused it
            stack("--profile", "monitoring", "down", "--volumes", timeout=300)
        pip.stop()


@pytest.fixture(scope="session")
def report() -> dict[str, str]:
    """Figures for the summary, by name. Through this fixture: a test module importing this file gets a copy of it."""
    return REPORT


def image_sizes(base: str) -> str:
    """Each image's size, and what it adds to the Python base it was built on."""

    def size(image: str) -> float:
        return int(run("docker", "image", "inspect", "--format", "{{.Size}}", image).stdout) / 1e6

    images = [f"convq-{name}:0.1.0" for name in ("api", "worker", "flower")]
    return "; ".join(
        f"{image}: {size(image):.0f} MB, {size(image) - size(base):.0f} MB over {base}" for image in images
    )


def pytest_terminal_summary(terminalreporter):
    for name, value in REPORT.items():
        terminalreporter.write_line(f"compose {name}: {value}")
