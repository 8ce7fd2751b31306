"""Every Redis connection convq makes, from settings: the one Redis at REDIS_URL, or the primary the sentinels name.

With REDIS_SENTINELS set, each client asks the sentinels where the primary of
REDIS_SENTINEL_MASTER is, and asks again whenever a connection breaks or the
server it reaches says it is a replica now (READONLY): so the job store, the
Celery broker and the rate limiter follow a failover without a restart. The
Redis servers' password and database number still come from REDIS_URL (its
host and port are then unused); the sentinels' own password is
REDIS_SENTINEL_PASSWORD (none when unset).
"""

from typing import Any

from redis import Redis
from redis.connection import Encoder, PythonRespSerializer, parse_url
from redis.sentinel import Sentinel, SentinelManagedConnection

from shared.settings import Settings

# How long a question to a sentinel may take before the next sentinel is asked.
SENTINEL_TIMEOUT_SECONDS = 0.5
# Commands are packed by redis-py's Python packer, which sends an argument over this many bytes as it is. hiredis's
# packer (redis-py's default with hiredis) copies every argument into one buffer at about 0.5 GB/s: a 4 MB SET
# cost 9 ms of CPU in it and 1 ms this way (measured); a small command costs a few microseconds more.
UNCOPIED_ARGUMENT_BYTES = 6000
_PACKER = PythonRespSerializer(UNCOPIED_ARGUMENT_BYTES, Encoder("utf-8", "strict", False).encode)


class PrimaryConnection(SentinelManagedConnection):
    """A connection to the primary that asks the sentinels where it is each time it connects again.

    redis-py 8.1's SentinelManagedConnection asks them in connect() only; a connection that a command's retry
    dropped reconnects from send_packed_command, straight to its last address: the lost primary, refused again
    and again for as long as the retries last (30 s with the workers' patience, measured: a training then ran
    into its time limit).
    """

    def send_packed_command(self, command, check_health=True):
        if not self._sock:
            self.connect()
        super().send_packed_command(command, check_health)


def replicated(settings: Settings) -> bool:
    """Whether Redis runs with replicas under sentinels: then writes that matter wait for a replica (WAIT)."""
    return bool(settings.redis_sentinels)


def connect(settings: Settings, **options: Any) -> Redis:
    """A client of convq's Redis (the primary, with sentinels); `options` are redis-py's (timeouts, retry)."""
    if not replicated(settings):
        return from_url(settings.redis_url, **options)
    sentinel = Sentinel(settings.sentinel_addresses, sentinel_kwargs=_sentinel_options(settings), **_auth(settings))
    return sentinel.master_for(
        settings.redis_sentinel_master, connection_class=PrimaryConnection, command_packer=_PACKER, **options
    )


def from_url(url: str, **options: Any) -> Redis:
    """A client of the Redis at `url` (the bulk Redis, or REDIS_URL's without sentinels)."""
    return Redis.from_url(url, command_packer=_PACKER, **options)


def broker_url(settings: Settings) -> str:
    """Celery's broker URL: REDIS_URL, or one `sentinel://` URL per sentinel (kombu tries each in turn)."""
    if not replicated(settings):
        return settings.redis_url
    parts = parse_url(settings.redis_url)
    auth = f"{parts.get('username') or ''}:{parts['password']}@" if parts.get("password") else ""
    db = parts.get("db", 0)
    return ";".join(f"sentinel://{auth}{host}:{port}/{db}" for host, port in settings.sentinel_addresses)


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """What kombu's sentinel transport needs beside the URL (nothing for a single Redis)."""
    if not replicated(settings):
        return {}
    return {"master_name": settings.redis_sentinel_master, "sentinel_kwargs": _sentinel_options(settings)}


def limiter_storage(settings: Settings, **options: Any) -> tuple[str, dict[str, Any]]:
    """The `limits` storage URI and options: `redis://...`, or `redis+sentinel://host:port,.../master`."""
    if not replicated(settings):
        return settings.redis_url, options
    hosts = ",".join(f"{host}:{port}" for host, port in settings.sentinel_addresses)
    uri = f"redis+sentinel://{hosts}/{settings.redis_sentinel_master}"
    # Counts are read from the primary too (use_replicas off): a replica's lag would let a burst through.
    sentinel = {
        "use_replicas": False,
        "sentinel_kwargs": _sentinel_options(settings),
        "connection_class": PrimaryConnection,
    }
    return uri, {**options, **_auth(settings), **sentinel}


def _auth(settings: Settings) -> dict[str, Any]:
    """The Redis servers' credentials and database, from REDIS_URL."""
    parts = parse_url(settings.redis_url)
    return {name: parts[name] for name in ("username", "password", "db") if parts.get(name) is not None}


def _sentinel_options(settings: Settings) -> dict[str, Any]:
    """How to talk to the sentinels themselves: always their own password (None: they need none), never REDIS_URL's."""
    return {
        "password": settings.redis_sentinel_password,
        "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
        "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
    }
