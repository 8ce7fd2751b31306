"""The deployment files keep their promises (checked without a Docker engine, which these machines lack)."""

import configparser
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shared.settings import Settings
from tests.support import REPO

BIN = Path(sys.executable).parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def stage(name: str) -> str:
    """The text of one stage of the Dockerfile."""
    return re.search(rf"^FROM .* AS {name}\n(.*?)(?=^FROM |\Z)", DOCKERFILE, re.M | re.S).group(1)


def test_compose_file_follows_the_compose_specification():
    run = subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "version" not in COMPOSE


def test_redis_persists_never_evicts_needs_a_password_and_stays_private():
    redis = SERVICES["redis"]
    command = " ".join(redis["command"])
    for flag in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction", "--requirepass"):
        assert flag in command
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")  # no default secret
    assert "ports" not in redis
    assert redis["volumes"] == ["redis-data:/data"] and "redis-data" in COMPOSE["volumes"]
    assert "healthcheck" in redis
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+-alpine\d+\.\d+", redis["image"])


@pytest.mark.parametrize("name", ["api", "worker", "worker-gpu"])
def test_services_wait_for_a_healthy_redis_and_check_their_own_health(name):
    service = SERVICES[name]
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert service["healthcheck"]["test"]
    assert service["environment"]["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?")
    assert "container_name" not in service  # --scale needs generated names


def test_api_and_worker_start_exactly_as_make_run_starts_them():
    local = configparser.ConfigParser(interpolation=None)
    local.read(REPO / "supervisord.conf")
    assert SERVICES["api"]["command"] == [local["program:api"]["command"]] == ["bin/api"]
    assert SERVICES["worker"]["command"] == [local["program:worker"]["command"]] == ["bin/worker"]
    assert "/healthz" in " ".join(SERVICES["api"]["healthcheck"]["test"])
    assert SERVICES["worker"]["healthcheck"]["test"] == ["CMD", "python", "-m", "worker.ping"]


def test_workers_scale_and_get_time_to_finish_or_hand_back_a_job():
    worker = SERVICES["worker"]
    assert "ports" not in worker
    grace = int(worker["stop_grace_period"].removesuffix("s"))
    assert grace >= Settings().shutdown_grace_seconds + 10


def test_optional_profiles_for_flower_and_a_gpu_worker():
    assert SERVICES["flower"]["profiles"] == ["monitoring"]
    assert SERVICES["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    gpu = SERVICES["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert gpu["command"] == ["bin/worker", "--pool", "solo"]
    assert gpu["environment"]["TORCH_DEVICE"] == "cuda" and gpu["environment"]["WORKER_CONCURRENCY"] == "1"


def test_dockerfile_passes_hadolint():
    run = subprocess.run([BIN / "hadolint", "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_images_are_multi_stage_pinned_and_run_as_a_non_root_user():
    bases = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert len(bases) >= 4
    external = [base for base in bases if ":" in base]
    assert external and all(re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base) for base in external)
    for target in ("api", "worker"):
        assert re.search(r"^USER 10001:10001$", stage(target), re.M), target
        assert stage(target).rstrip().splitlines()[-1].startswith("CMD")


def test_the_api_image_holds_no_torch():
    api, api_deps = stage("api"), stage("api-deps")
    assert "requirements/api.txt" in api_deps and "worker.txt" not in api_deps
    requirements = (REPO / "requirements" / "api.txt").read_text().splitlines()
    assert not [line for line in requirements if line.startswith(("torch", "-r"))]
    assert "--from=api-deps" in api and "services/" not in api and "worker/" not in api


def test_dockerignore_keeps_the_context_to_what_images_copy():
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*"  # everything, then the exceptions
    assert {"!requirements/", "!shared/", "!api/", "!services/", "!worker/", "!bin/"} <= set(ignored)


def test_env_example_lists_every_setting():
    example = (REPO / ".env.example").read_text()
    for name in Settings.model_fields:
        assert re.search(rf"^#? ?{name.upper()}=", example, re.M), f".env.example does not list {name.upper()}"
    assert re.search(r"^REDIS_PASSWORD=$", example, re.M)  # required, and no default secret
