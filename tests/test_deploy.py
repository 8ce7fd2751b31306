"""The deployment files keep their promises, read statically (`make compose-test` builds and runs them for real)."""

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
    assert re.fullmatch(r"\$\{REDIS_IMAGE:-redis:\d+\.\d+\.\d+-alpine\d+\.\d+\}", redis["image"])  # pinned, replaceable
    assert redis["user"] == "redis"  # the command starts with sh, so the image's entrypoint would keep root


def test_the_bulk_redis_keeps_big_arrays_out_of_the_queue_redis_persists_and_stays_private():
    bulk = SERVICES["bulk-redis"]
    assert bulk["command"] == SERVICES["redis"]["command"]  # append-only, noeviction, a password, as the queue's
    assert bulk["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    assert bulk["environment"]["REDIS_SENTINELS"] == ""  # never a primary under the sentinels
    assert bulk["volumes"] == ["bulk-redis-data:/data"] and "bulk-redis-data" in COMPOSE["volumes"]
    assert "ports" not in bulk and "healthcheck" in bulk and bulk["image"] == SERVICES["redis"]["image"]
    assert "profiles" not in bulk
    for name in ("api", "worker"):
        assert SERVICES[name]["environment"]["BULK_REDIS_URL"].endswith("@bulk-redis:6379/0}")


@pytest.mark.parametrize("name", ["api", "worker", "worker-gpu"])
def test_services_wait_for_a_healthy_redis_and_check_their_own_health(name):
    service = SERVICES[name]
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert service["depends_on"]["bulk-redis"]["condition"] == "service_healthy"
    assert service["healthcheck"]["test"]
    assert service["init"] is True  # signals reach the process from its first second
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


def test_the_api_is_published_on_loopback_unless_the_operator_says_otherwise():
    assert SERVICES["api"]["ports"] == ["${API_BIND:-127.0.0.1}:${API_PORT:-8000}:8000"]


def test_optional_profiles_for_flower_and_a_gpu_worker():
    assert SERVICES["flower"]["profiles"] == ["monitoring"]
    assert SERVICES["flower"]["ports"] == ["127.0.0.1:${FLOWER_PORT:-5555}:5555"]
    assert SERVICES["flower"]["build"]["target"] == "flower"
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
    assert [base for base in bases if "$" in base] == ["${PYTHON_IMAGE}"]  # one external base, a build argument
    assert re.search(r"^ARG PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim-\w+$", DOCKERFILE, re.M)  # pinned official default
    assert "# syntax=" not in DOCKERFILE  # BuildKit would fetch that frontend from a registry: no offline build
    for target in ("api", "worker", "flower"):
        assert re.search(r"^USER 10001:10001$", stage(target), re.M), target
        assert stage(target).rstrip().splitlines()[-1].startswith("CMD")


def requirements(name: str) -> list[str]:
    """The packages a requirements file asks for, through its -r includes."""
    found = []
    for line in (REPO / "requirements" / name).read_text().splitlines():
        if line.startswith("-r "):
            found += requirements(line.split()[1])
        elif line and not line.startswith(("#", "-")):
            found.append(re.split(r"[=<>\[ ]", line)[0])
    return found


def test_the_api_image_holds_no_torch_and_the_worker_no_web_stack():
    api, api_deps = stage("api"), stage("api-deps")
    assert "requirements/api.txt" in api_deps and "worker.txt" not in api_deps
    assert "torch" not in requirements("api.txt")
    assert not {"flask", "gunicorn", "matplotlib", "pillow"} & set(requirements("worker.txt"))
    assert "--from=api-deps" in api and "services/" not in api and "worker/" not in api
    for deps in ("api-deps", "worker-deps", "flower-deps"):
        assert "pip uninstall --yes pip setuptools" in stage(deps)  # the final images hold no pip


def test_dockerignore_lets_in_every_file_the_dockerfile_copies():
    rules = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*"  # everything, then the exceptions
    allowed = [rule[1:] for rule in rules if rule.startswith("!")]
    copied = [source for line in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M) for source in line.split()]
    assert copied
    for source in copied:
        assert (REPO / source).exists(), source
        assert any(source == rule or source.startswith(rule) for rule in allowed), f"{source} is left out of the build"


def test_env_example_lists_every_setting():
    example = (REPO / ".env.example").read_text()
    for name in Settings.model_fields:
        assert re.search(rf"^#? ?{name.upper()}=", example, re.M), f".env.example does not list {name.upper()}"
    assert re.search(r"^REDIS_PASSWORD=$", example, re.M)  # required, and no default secret


def test_env_example_lists_every_variable_compose_reads():
    example = (REPO / ".env.example").read_text()
    # ${NAME} is compose's; $${NAME} is an escaped one, the container shell's own.
    variables = set(re.findall(r"(?<!\$)\$\{(\w+)", (REPO / "docker-compose.yml").read_text()))
    variables |= {arg for service in SERVICES.values() for arg in service.get("build", {}).get("args", [])}
    for name in {variable.split("=")[0] for variable in variables}:
        assert re.search(rf"^#? ?{name}=", example, re.M), f".env.example does not list {name}"
