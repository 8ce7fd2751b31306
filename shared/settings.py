"""The one place where environment variables become settings; api and worker read the same object."""

from functools import lru_cache
from typing import Literal

from pydantic import Field, PositiveInt, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """convq's settings, each read from the environment variable of the same name in capitals."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # Where jobs, results and the Celery queue live. A plain str: RedisDsn rejects unix:// sockets.
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Where request arrays and results over 64 KiB live (unset: REDIS_URL). A Redis of their own keeps their
    # bytes and AOF writes from holding up the queue's Redis (docs/PERFORMANCE.md). Not watched by the sentinels:
    # under REDIS_SENTINELS, leave it unset and the big arrays go to the replicated primary too.
    bulk_redis_url: str | None = None
    # High availability: the sentinels (comma-separated host:port) that watch the Redis primary named
    # REDIS_SENTINEL_MASTER and its replicas. When set, every client finds the primary through them and follows a
    # failover; REDIS_URL then gives only the servers' password and database number (shared.redis_clients).
    redis_sentinels: str | None = None
    redis_sentinel_master: str = "convq"
    # The sentinels' own password (their `requirepass`); unset: they need none.
    redis_sentinel_password: str | None = None
    # With sentinels, a submission and a job's start and end wait this long for a replica to confirm them (WAIT);
    # below REDIS_TIMEOUT_SECONDS, or the wait would read as a lost Redis.
    replica_wait_seconds: float = Field(0.25, gt=0)
    # The thread that handles a request of over 64 KiB (API) or runs a job whose arrays are (worker) takes this
    # much more niceness meanwhile, so that small jobs win the cores (shared.priority); 0: the same priority.
    big_work_niceness: int = Field(10, ge=0, le=19)
    # Address the API listens on.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # How long a job's record (status, parameters, shapes, error) is kept after its last change...
    job_ttl_seconds: PositiveInt = 24 * 3600
    # ...and its result and loss history (unset: as long; never longer). The bytes of a big result are most of
    # what Redis holds: a shorter retention frees memory sooner, and the job then answers with its status but
    # no result (README, retention). A request's arrays are deleted as soon as the job ends.
    result_ttl_seconds: PositiveInt | None = None
    # Largest matrix accepted (elements); 2048 x 2048 by default.
    max_matrix_elements: PositiveInt = 2048 * 2048
    # Largest request body accepted (bytes): a 2048 x 2048 matrix is 40-60 MB as JSON text (10-15 characters
    # a number), 22 MB in base64. Long arrays are read straight into float32 (api/bulk.py): a body costs the
    # API process at most about 3 times its size.
    max_body_bytes: PositiveInt = 64 * 1024 * 1024
    # Most epochs one training may ask for.
    max_epochs: PositiveInt = 10_000
    # Most work one job may ask for: output elements x kernel taps x epochs (1 for a correlation).
    max_work: PositiveInt = 20_000_000_000
    # Submissions are refused (429) while more jobs than this wait in the queue.
    max_queue_length: PositiveInt = 10_000
    # Longest wait a client may ask for with `Prefer: wait=N` on a submission.
    max_wait_seconds: PositiveInt = 60
    # Longest a /events stream stays open; clients reconnect with Last-Event-ID.
    max_stream_seconds: PositiveInt = 300
    # API keys as JSON, name to key: {"alice": "s3cret"}. Empty: the API is open to anyone who can reach it.
    api_keys: dict[str, str] = {}
    # Submissions allowed per API key (or per client address when keys are off), in limits' notation.
    submit_rate_limit: str = "600/minute"
    # Threads per API process: each open /events stream and each `Prefer: wait` submission holds one...
    api_threads: PositiveInt = 64
    # ...but at most this many of them per process (the rest stay free for short requests; must be below
    # API_THREADS): a stream beyond it is refused (503, Retry-After), a waiting submission answered 202 at once...
    max_held_requests: PositiveInt = 32
    # ...and at most this many per caller (API key, or client address when keys are off) per process (429).
    max_held_requests_per_caller: PositiveInt = 8
    # A job running longer than this is stopped and fails (hard limit; a soft limit 5% earlier
    # lets it fail cleanly). Keep it close to your longest job: it also bounds redelivery.
    job_time_limit_seconds: PositiveInt = 600
    # A message whose worker vanished is redelivered this long after the hard time limit...
    redelivery_margin_seconds: PositiveInt = 30
    # ...by the sweep that every worker runs this often.
    restore_sweep_seconds: PositiveInt = 10
    # A job whose worker dies this many times (killed, out of memory) fails instead of running again.
    max_attempts: PositiveInt = 3
    # Worker processes per worker (Celery prefork children); unset means one per CPU core.
    worker_concurrency: PositiveInt | None = None
    # A worker process is replaced after this many jobs...
    worker_max_tasks_per_child: PositiveInt = 1000
    # ...or once its resident memory passes this many MiB (checked after each job).
    worker_max_memory_per_child_mb: PositiveInt = 2048
    # On SIGTERM a worker lets running jobs finish for this long, then hands them back to the queue.
    shutdown_grace_seconds: float = Field(20.0, ge=0)
    # Send Celery task events (for Flower, which also turns them on itself); each costs Redis round trips.
    task_events: bool = False
    # Where workers compute: "auto" takes CUDA when the worker has it.
    torch_device: Literal["auto", "cpu", "cuda"] = "auto"
    # GPU workers serve a queue of their own: with this on, the API sends a job there when the request says
    # "device": "gpu", or says "auto" (the default) and its work (see max_work) is at least gpu_min_work.
    gpu_queue: bool = False
    gpu_min_work: PositiveInt = 1_000_000_000
    # The queues this worker takes jobs from: "gpu" for a GPU worker beside CPU ones, "cpu,gpu" for one that does both.
    worker_queues: Literal["cpu", "gpu", "cpu,gpu"] = "cpu"
    # How long one job-store call may wait on Redis: the API answers 503 soon after.
    redis_timeout_seconds: float = Field(0.5, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # One JSON object per line (for machines: compose, log collectors), or text lines for a person at a terminal.
    log_format: Literal["json", "text"] = "json"
    # "production" refuses unsafe settings (a Redis without a password) instead of allowing them.
    environment: Literal["development", "production"] = "development"

    @field_validator("redis_sentinels")
    @classmethod
    def _host_port_list(cls, value: str | None) -> str | None:
        host_ports(value or "")  # refuses a malformed list at start, not at the first connection
        return value

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """REDIS_SENTINELS as (host, port) pairs; empty without sentinels."""
        return host_ports(self.redis_sentinels or "")

    @property
    def soft_time_limit_seconds(self) -> int:
        return self.job_time_limit_seconds - max(1, self.job_time_limit_seconds // 20)

    @property
    def visibility_timeout_seconds(self) -> int:
        """How long Redis holds a delivered, unacknowledged message before it may go to another worker."""
        return self.job_time_limit_seconds + self.redelivery_margin_seconds

    @property
    def redelivery_bound_seconds(self) -> int:
        """The longest a job whose whole worker vanished waits before another worker gets it."""
        return self.visibility_timeout_seconds + self.restore_sweep_seconds

    @property
    def message_check_seconds(self) -> int:
        """How long after it was queued the reconciler first checks that a job's message exists (a few sweeps)."""
        return 3 * self.restore_sweep_seconds

    @property
    def attempt_deadline_seconds(self) -> int:
        """How long after an attempt started the reconciler checks that a job still has a message.

        By then a message whose worker vanished has been redelivered (and the attempt replaced), so a job still
        running on the same attempt with no message anywhere was acknowledged without being finished.
        """
        return self.redelivery_bound_seconds + self.restore_sweep_seconds


def host_ports(value: str) -> list[tuple[str, int]]:
    """ "a:1, b:2" as [("a", 1), ("b", 2)]; ValueError for an entry that is not host:port."""
    addresses = []
    for entry in filter(None, value.replace(" ", "").split(",")):
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected host:port entries separated by commas; {entry!r} is not one")
        addresses.append((host, int(port)))
    return addresses


@lru_cache
def get_settings() -> Settings:
    """Return the process's settings, read from the environment once."""
    return Settings()
