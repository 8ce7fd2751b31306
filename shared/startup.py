"""Checks that api and worker run before they serve: refuse inconsistent settings, warn about a risky Redis."""

import logging
from urllib.parse import urlsplit

from redis import Redis
from redis.exceptions import RedisError

from shared.settings import Settings

log = logging.getLogger(__name__)


class ConfigurationError(SystemExit):
    """Settings that would make convq unsafe or broken; the process stops with this message."""


def check_settings(settings: Settings) -> None:
    """Refuse to start on settings that contradict each other or are unsafe outside development."""
    problems = []
    if settings.environment == "production" and not urlsplit(settings.redis_url).password:
        problems.append("REDIS_URL has no password; in production Redis must require one (ENVIRONMENT=production)")
    if settings.torch_device == "cuda" and settings.worker_concurrency != 1:
        problems.append("TORCH_DEVICE=cuda needs WORKER_CONCURRENCY=1: CUDA does not survive fork, one process per GPU")
    if settings.soft_time_limit_seconds < 1:
        problems.append("JOB_TIME_LIMIT_SECONDS must be at least 2 so the soft limit comes before the hard one")
    if settings.max_held_requests >= settings.api_threads:
        problems.append(
            "MAX_HELD_REQUESTS must be below API_THREADS: streams and waiting submissions would take every thread"
        )
    if settings.redis_sentinels and settings.replica_wait_seconds >= settings.redis_timeout_seconds:
        problems.append(
            "REPLICA_WAIT_SECONDS must be below REDIS_TIMEOUT_SECONDS: a wait for a replica as long as the socket "
            "timeout ends as a timeout, and the write it waited for is then neither confirmed nor undone"
        )
    if problems:
        raise ConfigurationError("convq cannot start: " + "; ".join(problems))


def warn_if_open(settings: Settings) -> None:
    """Say that anyone who can reach the API may use it when no API keys are set."""
    if not settings.api_keys:
        log.warning("API keys are off (API_KEYS is empty): anyone who can reach this API may use it")


def warn_about_redis(redis: Redis, replicated: bool = False) -> None:
    """Log a warning when Redis could lose or evict queued jobs; say so when it cannot be asked.

    A `replicated` Redis (under sentinels) is also warned about when its primary takes writes with no replica.
    """
    try:
        raw = redis.config_get("appendonly") | redis.config_get("maxmemory-policy")
        raw |= redis.config_get("min-replicas-to-write") if replicated else {}
    except RedisError as error:
        log.warning("could not check Redis persistence settings: %s", error)
        return
    config = {_text(key): _text(value) for key, value in raw.items()}
    if config.get("appendonly") != "yes":
        log.warning("Redis runs without appendonly: queued and running jobs are lost if Redis restarts")
    if config.get("maxmemory-policy", "noeviction") != "noeviction":
        policy = config["maxmemory-policy"]
        log.warning("Redis maxmemory-policy is %s: Redis may evict queued jobs; use noeviction", policy)
    if replicated and config.get("min-replicas-to-write") == "0":
        log.warning(
            "the Redis primary has min-replicas-to-write 0: cut off from its replicas, it keeps taking writes "
            "that a failover on the other side discards; set it to 1 on every server"
        )


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
