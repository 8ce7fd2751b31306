"""Redis with replicas and sentinels for the tests: real redis-server processes on 127.0.0.1, started and killed by pid.

A primary, its replicas and three sentinels, every one password-protected, set up as docs/RELIABILITY.md says a
deployment should be: AOF, noeviction, and `min-replicas-to-write 1` on every server (any may become the primary),
so a primary cut off from all its replicas stops taking writes.
"""

import subprocess
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from tests.support import RedisServer, free_port, stop, wait_until

PASSWORD = "replicated-test-password"
SENTINEL_PASSWORD = "sentinel-test-password"
MASTER = "convq"
DOWN_AFTER_MS = 2000  # how long the primary must be silent before the sentinels start a failover
FAILOVER_TIMEOUT_MS = 5000


class Node(RedisServer):
    """One redis-server (primary or replica) with its own folder and port; restartable with the same data."""

    def __init__(self, directory: Path, replica_of: int | None):
        directory.mkdir(parents=True, exist_ok=True)
        options = ["--masterauth", PASSWORD, "--repl-diskless-sync-delay", "0"]
        options += ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "10"]
        options += ["--replicaof", "127.0.0.1", str(replica_of)] if replica_of is not None else []
        super().__init__(directory, append_only=True, password=PASSWORD, options=tuple(options))

    def client(self) -> Redis:
        return Redis(port=self.port, password=PASSWORD, socket_timeout=1)

    def role(self) -> dict:
        return self.client().info("replication")


class Sentinel:
    """One `redis-server --sentinel`, with the config file it rewrites as it learns the topology."""

    def __init__(self, binary: str, directory: Path, primary_port: int):
        self.binary, self.directory = binary, directory
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "sentinel.conf").write_text(
            f"bind 127.0.0.1\nport {self.port}\ndir {directory}\n"
            f"requirepass {SENTINEL_PASSWORD}\nsentinel sentinel-pass {SENTINEL_PASSWORD}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
            f"sentinel auth-pass {MASTER} {PASSWORD}\n"
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> "Sentinel":
        with open(self.directory / "sentinel.log", "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, str(self.directory / "sentinel.conf"), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def client(self) -> Redis:
        return Redis(port=self.port, password=SENTINEL_PASSWORD, socket_timeout=1)

    def primary_port(self) -> int | None:
        try:
            address = self.client().sentinel_get_master_addr_by_name(MASTER)
        except RedisError:
            return None
        return int(address[1]) if address else None

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


class ReplicatedRedis:
    """A primary, `replicas` replicas of it and three sentinels watching them."""

    def __init__(self, binary: str, directory: Path, replicas: int = 2):
        primary = Node(directory / "node-0", None)
        self.nodes = [primary] + [Node(directory / f"node-{i}", primary.port) for i in range(1, replicas + 1)]
        self.sentinels = [Sentinel(binary, directory / f"sentinel-{i}", primary.port) for i in range(3)]

    @property
    def addresses(self) -> str:
        """REDIS_SENTINELS for these sentinels."""
        return ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)

    def start(self) -> "ReplicatedRedis":
        for node in self.nodes:
            node.start()
        wait_until(lambda: self.nodes[0].role()["connected_slaves"] == len(self.nodes) - 1, 20, "replicas to connect")
        for sentinel in self.sentinels:
            sentinel.start()
        wait_until(self._sentinels_agree, 20, "the sentinels to know the primary and each other")
        return self

    def primary(self) -> Node:
        """The node the sentinels name as primary now."""
        port = self.sentinels[0].primary_port()
        return next(node for node in self.nodes if node.port == port)

    def _sentinels_agree(self) -> bool:
        try:
            states = [sentinel.client().sentinel_master(MASTER) for sentinel in self.sentinels]
        except RedisError:
            return False
        return all(int(state["num-other-sentinels"]) == 2 and int(state["num-slaves"]) for state in states)

    def stop(self) -> None:
        for process in [*self.sentinels, *self.nodes]:
            process.stop()
