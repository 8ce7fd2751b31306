"""The Redis job store: the only module that knows its Redis keys, and the single source of truth of a job's state.

Every key is built by name in one block below (JobKeys and the functions and constants beside it), and each Lua
script's keys are declared from there (SCRIPT_KEYS); kombu's keys (the Celery queues) are shared.taskqueue's.

A job is a few keys (JobKeys), expiring `ttl` seconds after the job's last change: its record (which
holds the request's skeleton: parameters and shapes, shared.packing), the request's arrays as raw bytes
(deleted when the job ends), and its events; its result and losses expire `result_ttl` seconds after
(RESULT_TTL_SECONDS, at most the record's). Request arrays and results over INLINE_BYTES live in the bulk
Redis (BULK_REDIS_URL, by default the same one), a big result under its attempt's own key. Jobs stored by the
previous release keep their request as one JSON value (`request`) and their result as JSON (`result`). Beside them: each
owner's index of job ids, idempotency keys, the metrics hash (never expires), and the index of
unfinished jobs (a sorted set scored by when each is due for the reconciler's look: see due_jobs).

Workers may be killed and messages redelivered, so every state change is one
Lua script (shared.jobstore_scripts) that checks the state it expects: an
attempt number guards the writes of each run, a loss is appended only if it
is the next epoch's, and only the current attempt may finish a job. Request arrays
and results over INLINE_BYTES are SET beside the script, not passed through it.

Stored format: a job of this release has the skeleton on its record (field `request`); its message goes to
a queue of this release (shared.taskqueue.QUEUE_NAMES) and it is indexed in UNFINISHED_KEY, neither of which
the previous release reads, so a worker of that release never sees it. Workers of this release also take the
previous release's queues and index, and run and finish its jobs (docs/RELIABILITY.md, upgrades).
"""

import contextlib
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import orjson
from redis import Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.client import Pipeline
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError
from redis.retry import Retry

from shared import jobstore_scripts as scripts
from shared.packing import Packed, result_json
from shared.redis_clients import connect, from_url, replicated
from shared.response_models import Job, JobKind, JobSummary, Problem
from shared.settings import Settings
from shared.taskqueue import UNCHECKED_CPU_QUEUE, QueueFull, Route

# --- every Redis key of the job store, by name ----------------------------------------------------------------
# (kombu's keys, the Celery queues and their unacknowledged messages, are shared.taskqueue's.)

_PREFIX = "convq:job:"
# Counters of every job ever seen, for /metrics; updated by the same scripts that change job states,
# so they agree with them exactly, whichever API process or worker made the change. Never expires.
METRICS_KEY = "convq:metrics"
SEQUENCE_KEY = "convq:jobs:sequence"  # the submission counter that orders each owner's index
# Every queued or running job, scored by when (Redis time, ms) the reconciler should check that it still has a
# queue message; outside "convq:jobs:", where an owner named "unfinished" would collide.
UNFINISHED_KEY = "convq:unfinished:2"
LEGACY_UNFINISHED_KEY = "convq:unfinished"  # the previous release's jobs, swept until none is left
RECONCILER_LOCK_KEY = "convq:reconciler"  # held by the one worker whose sweep runs now
WRITE_PROBE_KEY = "convq:readiness"  # written by readiness checks: does Redis take a write?


class JobKeys(NamedTuple):
    """A job's keys (and the metrics hash, which every script updates), in the order every script takes them."""

    record: str  # hash: id, kind, status, owner, timestamps, epochs, attempts, cancel flag, error, request skeleton
    request: str  # previous release: the whole request as JSON (matrices in base64)
    result: str  # previous release: the result as JSON
    losses: str  # list: the loss of epoch i at index i - 1
    events: str  # stream: a progress entry per epoch (id "<epoch>-0"), then one status entry
    metrics: str  # METRICS_KEY, not the job's own
    arrays: str  # the request's arrays, raw (shared.packing), written once at submission, deleted at the end
    packed_result: str  # the result, packed (shared.packing), written once by the attempt that finishes the job

    @classmethod
    def of(cls, job_id: str) -> "JobKeys":
        """convq:job:<id>, then :request, :result, :losses, :events; the metrics hash; :arrays, :packed-result."""
        record = _PREFIX + job_id
        return cls(
            record,
            record + ":request",
            record + ":result",
            record + ":losses",
            record + ":events",
            METRICS_KEY,
            record + ":arrays",
            record + ":packed-result",
        )


def index_key_for(owner: str) -> str:
    """That owner's job ids, a sorted set scored by submission order."""
    return "convq:jobs:" + owner


def idempotency_key_for(owner: str, key: str) -> str:
    """The job an owner's Idempotency-Key named, and the hash of its request."""
    return f"convq:idempotency:{owner}:{key}"


def attempt_result_key_for(job_id: str, attempt: int | str) -> str:
    """A big result of this attempt, in the bulk Redis: the job's result once FINISH accepts it (the record names
    the attempt), else deleted."""
    return f"{_PREFIX}{job_id}:result:{attempt}"


def job_keys_pattern(job_id: str = "") -> str:
    """A glob of every key of the job (its own and its attempts' results); of every job's keys without an id."""
    return f"{_PREFIX}{job_id}*"


# The KEYS of each script (shared.jobstore_scripts), in order: the job's JobKeys, then the script's own. A script
# reads key `name` as the Lua local `<name>_key`, declared from these (_Script); the fixed ones are filled in.
SCRIPT_KEYS: dict[str, tuple[str, ...]] = {
    "CREATE": (*JobKeys._fields, "index", "idempotency", "sequence", "queue", "unfinished"),
    "DISCARD": (*JobKeys._fields, "index", "unfinished"),
    "START": (*JobKeys._fields, "unfinished"),
    "RECORD_EPOCHS": JobKeys._fields,
    "FINISH": (*JobKeys._fields, "unfinished"),
    "CANCEL": (*JobKeys._fields, "unfinished"),
    "RECONCILE": (*JobKeys._fields, "unfinished"),
}
_FIXED_KEYS = {"sequence": SEQUENCE_KEY, "unfinished": UNFINISHED_KEY}


class _Script:
    """One of the job scripts, its keys declared by name: called with a job's JobKeys and its other keys by name."""

    def __init__(self, redis: Redis, name: str):
        self.layout = SCRIPT_KEYS[name]
        declarations = "".join(f"local {key}_key = KEYS[{i}]\n" for i, key in enumerate(self.layout, 1))
        self._script = redis.register_script(declarations + getattr(scripts, name))

    def __call__(self, keys: JobKeys, args: list, client: Redis | Pipeline | None = None, **other_keys: str):
        if not other_keys.keys() <= set(self.layout):
            raise TypeError(f"the script takes no key {', '.join(other_keys.keys() - set(self.layout))}")
        named = keys._asdict() | _FIXED_KEYS | other_keys
        return self._script(keys=[named[name] for name in self.layout], args=args, client=client)


# A stream read waits at most this long, so that keep-alives and deadlines are honoured; the blocking connection's
# socket timeout is longer, or a quiet stream would read as a lost Redis.
STREAM_BLOCK_SECONDS = 15
# Moving a big array takes longer than a job-state command: the bulk Redis's calls may take this long.
BULK_SOCKET_TIMEOUT_SECONDS = 10
BLOCKING_SOCKET_TIMEOUT_SECONDS = STREAM_BLOCK_SECONDS + 5
# A running training records its losses at least this often (worker.progress), and learns each time whether it
# was cancelled: a cancelled training stops within one epoch or this, whichever is longer.
FLUSH_SECONDS = 0.1
# Request arrays and results up to INLINE_BYTES go through the job scripts (one round trip); bigger ones by SET
# and GET, as Lua copies cost a few ms per MB (jobstore_scripts), written WRITE_BYTES at a time.
WRITE_BYTES = 8 * 1024 * 1024  # a 1024 x 1024 request (4 MiB and a kernel) in one SET: an APPEND copies the value
INLINE_BYTES = 64 * 1024
# Workers ride out this long a primary that refuses writes for want of replicas (NOREPLICAS): the first seconds
# after a failover, before the other replicas follow the new primary. The API does not wait: it answers 503.
REPLICA_PATIENCE_SECONDS = 15.0
# Upper bounds (seconds) of the job run time histogram's buckets. Workers count each run time in its bucket as it ends
# (the metrics hash's run_seconds_bucket:<kind>:<bound> fields), so the bounds are part of the stored format.
RUN_TIME_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600)


def _now() -> str:
    return _iso(datetime.now(UTC))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_time_bucket(seconds: float) -> str:
    """The label of the histogram bucket a run time falls in."""
    return next((f"{bound:g}" for bound in RUN_TIME_BUCKETS if seconds <= bound), "+Inf")


@dataclass(frozen=True)
class RetryPolicy:
    base: float  # seconds; the n-th retry waits a random time up to base * 2**n...
    cap: float  # ...but never more than cap
    retries: int


# redis-py's default (10 retries, up to 1 s apart) would hold an API request for ~5 s.
IMPATIENT_RETRY = RetryPolicy(base=0.01, cap=0.1, retries=1)
PATIENT_RETRY = RetryPolicy(base=0.05, cap=2.0, retries=20)


@dataclass(frozen=True)
class Attempt:
    """One run of a job by a worker: the request to run, and the number that guards this run's writes."""

    job_id: str
    number: int
    request: Packed
    request_id: str | None  # of the HTTP request that submitted the job, for the logs

    @property
    def big(self) -> bool:
        """Whether its request's arrays are over INLINE_BYTES (kept in the bulk Redis)."""
        return len(self.request.arrays or self.request.skeleton) > INLINE_BYTES


@dataclass(frozen=True)
class Event:
    """One entry of a job's event stream: a finished epoch, or the job's final status."""

    id: str
    type: str  # "progress" or "status"
    epoch: int | None = None
    loss: float | None = None


@dataclass(frozen=True)
class JobCounts:
    """What the metrics hash holds, by job kind: plain counts (api.telemetry turns them into Prometheus metrics)."""

    submitted: dict[str, int]
    finished: dict[tuple[str, str], int]  # (kind, status) -> count
    epochs: int
    run_seconds_buckets: dict[tuple[str, str], int]  # (kind, bucket upper bound) -> count, not cumulative
    run_seconds_sum: dict[str, float]

    @classmethod
    def parse(cls, fields: dict[bytes, bytes]) -> "JobCounts":
        submitted, finished, buckets, sums, epochs = {}, {}, {}, {}, 0
        for raw_name, raw_value in fields.items():
            name, value = raw_name.decode(), raw_value.decode()
            match name.split(":"):
                case ["submitted", kind]:
                    submitted[kind] = int(value)
                case ["finished", kind, status]:
                    finished[(kind, status)] = int(value)
                case ["run_seconds_bucket", kind, bound]:
                    buckets[(kind, bound)] = int(value)
                case ["run_seconds_sum", kind]:
                    sums[kind] = float(value)
                case ["epochs"]:
                    epochs = int(value)
        return cls(submitted, finished, epochs, buckets, sums)


class Memory(NamedTuple):
    used: int  # bytes
    limit: int  # maxmemory in bytes; 0: none
    writable: bool  # False: at maxmemory, Redis (noeviction) refuses every write that would grow its memory

    @property
    def full(self) -> bool:
        return not self.writable

    @property
    def used_mib(self) -> float:
        return self.used / 2**20

    @property
    def max_mib(self) -> float:
        return self.limit / 2**20


class EpochsRecorded(NamedTuple):
    go_on: bool  # False: the run should stop (cancelled, or superseded by a later attempt)
    stored: int  # epochs the job has stored, whichever attempt recorded them


class NotReplicated(RedisError):
    """No replica confirmed a write within REPLICA_WAIT_SECONDS: a failover now could forget it.

    A RedisError like the others on purpose: the API answers it 503 with Retry-After, and a worker hands its
    job back to the queue rather than acknowledge a start or an end that only the primary holds.
    """


class AttemptsExhausted(Exception):
    """A job was started more times than allowed: its worker died on every attempt."""


class IdempotencyConflict(Exception):
    """An idempotency key was reused with a different request."""


@dataclass(frozen=True)
class DueJob:
    """An unfinished job whose time to be looked at by the reconciler has come."""

    id: str
    kind: str
    status: str
    attempts: str  # as stored, for the compare-and-set of reconcile()
    device: str
    index: str  # the index of unfinished jobs it was found in: this release's, or the previous release's


def replicas_missing(error: BaseException) -> bool:
    """Whether the primary refused a write for want of replicas (its min-replicas-to-write is not met).

    Said by the error's text, which a pipeline prefixes with the failed command's place in it.
    """
    return isinstance(error, ResponseError) and "NOREPLICAS Not enough good replicas" in str(error)


def out_of_memory(error: BaseException | None) -> bool:
    """Whether Redis refused a write because it is at maxmemory: the error, or any error that led to it."""
    seen = 0
    while error is not None and seen < 10:
        # kombu re-raises Redis's errors as its own, keeping only the text: "... command not allowed when used
        # memory > 'maxmemory'."
        if isinstance(error, OutOfMemoryError) or "used memory > 'maxmemory'" in str(error):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


class JobStore:
    """Jobs in Redis. The connections are passed in; nothing here is global.

    A job's record and events are kept `ttl_seconds` after its last change, its result and losses
    `result_ttl_seconds` (at most as long; by default as long).

    `blocking` serves reads that wait for news (streams), so they are not cut
    short by the fast-failing timeouts of `redis`. A job is due for the
    reconciler `message_check_seconds` after it was queued and
    `attempt_deadline_seconds` after an attempt started, unless it ended.

    `bulk` holds the arrays and results over INLINE_BYTES (BULK_REDIS_URL; by default `redis` itself): their
    bytes, and the AOF writes they cause, then never hold up `redis`, which serves every job's state and the
    queue (docs/PERFORMANCE.md). Everything that decides a job's state stays in `redis`, in its scripts.
    """

    def __init__(
        self,
        redis: Redis,
        ttl_seconds: int,
        max_attempts: int = 3,
        blocking: Redis | None = None,
        *,
        bulk: Redis | None = None,
        result_ttl_seconds: int | None = None,
        message_check_seconds: float = 30,
        attempt_deadline_seconds: float = 700,
        replica_wait_seconds: float | None = None,
        replica_patience_seconds: float = 0,
    ):
        self.redis = redis
        self.blocking = blocking or redis
        self.bulk = bulk or redis
        self.ttl = ttl_seconds
        self.result_ttl = min(result_ttl_seconds or ttl_seconds, ttl_seconds)
        self.max_attempts = max_attempts
        self.message_check_seconds = message_check_seconds
        self.attempt_deadline_seconds = attempt_deadline_seconds
        self.replica_wait_seconds = replica_wait_seconds
        self.replica_patience_seconds = replica_patience_seconds
        self._create = _Script(redis, "CREATE")
        self._discard = _Script(redis, "DISCARD")
        self._start = _Script(redis, "START")
        self._record_epochs = _Script(redis, "RECORD_EPOCHS")
        self._finish = _Script(redis, "FINISH")
        self._cancel = _Script(redis, "CANCEL")
        self._reconcile = _Script(redis, "RECONCILE")

    @classmethod
    def from_settings(cls, settings: Settings, *, patient: bool = False) -> "JobStore":
        """Connect as the settings say.

        The API is impatient: a lost Redis must turn into a 503 within seconds.
        Workers are patient: they ride out a Redis restart of up to about half a
        minute in the middle of a job rather than abandon it.
        """
        retry = PATIENT_RETRY if patient else IMPATIENT_RETRY
        common = {"health_check_interval": 30, "socket_connect_timeout": settings.redis_timeout_seconds}
        redis = connect(
            settings,
            socket_timeout=settings.redis_timeout_seconds,
            retry=Retry(ExponentialWithJitterBackoff(base=retry.base, cap=retry.cap), retry.retries),
            **common,
        )
        blocking = connect(settings, socket_timeout=BLOCKING_SOCKET_TIMEOUT_SECONDS, **common)
        bulk = None
        if settings.bulk_redis_url and settings.bulk_redis_url != settings.redis_url:  # empty: share it
            bulk = from_url(settings.bulk_redis_url, socket_timeout=BULK_SOCKET_TIMEOUT_SECONDS, **common)
        return cls(
            redis,
            settings.job_ttl_seconds,
            settings.max_attempts,
            blocking,
            bulk=bulk,
            result_ttl_seconds=settings.result_ttl_seconds,
            message_check_seconds=settings.message_check_seconds,
            attempt_deadline_seconds=settings.attempt_deadline_seconds,
            replica_wait_seconds=settings.replica_wait_seconds if replicated(settings) else None,
            replica_patience_seconds=REPLICA_PATIENCE_SECONDS if patient and replicated(settings) else 0,
        )

    # --- used by the API -------------------------------------------------------------------

    def create(
        self,
        kind: JobKind,
        request: Packed,
        owner: str,
        epochs: int | None = None,
        request_id: str | None = None,
        idempotency_key: str | None = None,
        route: Route = UNCHECKED_CPU_QUEUE,
    ) -> tuple[dict, bool]:
        """Store a new queued job and its request (skeleton and arrays); return the job as the API shows it, and
        whether it is new.

        `route` names the job's Celery queue: raise QueueFull, creating nothing, when it is full.
        With an idempotency key already used by this owner, return that job instead (not new); raise
        IdempotencyConflict if it was used for a different request.
        """
        job_id = str(uuid.uuid4())
        # Only a repeated idempotency key compares requests: no hashing of big bodies without one.
        request_hash = _hash(request) if idempotency_key else ""
        record = {"id": job_id, "kind": kind, "status": "queued", "created_at": _now(), "attempts": 0, "owner": owner}
        record |= {"queue": route.device, "request": request.skeleton, "result_ttl": self.result_ttl}
        if epochs is not None:
            record["epochs"] = epochs
        if request_id is not None:
            record["request_id"] = request_id
        keys = JobKeys.of(job_id)
        in_bulk = len(request.arrays) > INLINE_BYTES
        if in_bulk:
            record["arrays_in_bulk"] = 1
            self._write(keys.arrays, request.arrays, self.ttl)
        fields = [item for pair in record.items() for item in pair]
        inline = b"" if in_bulk else request.arrays
        args = [self.ttl, job_id, request_hash, route.capacity, inline, self.message_check_seconds, *fields]
        idempotency = idempotency_key_for(owner, idempotency_key) if idempotency_key else ""
        (created, *found), replicas = self._replicated(
            self._create, keys, args, index=index_key_for(owner), idempotency=idempotency, queue=route.queue
        )
        if created != 1 and in_bulk:
            self.bulk.delete(keys.arrays)  # refused or replayed: the arrays are not this job's
        if created < 0:
            raise QueueFull(route.queue)
        if created and replicas < 1:  # not on a replica: no 202 for it
            self.discard(job_id, owner)
            raise NotReplicated(f"no replica confirmed job {job_id} within {self.replica_wait_seconds} s")
        if created:
            record["expires_at_ms"] = found[1].decode()
            return self._view({name: str(value) for name, value in record.items()}, None, 0, None), True
        if found[1].decode() != request_hash:
            raise IdempotencyConflict(found[0].decode())
        return self.get(found[0].decode(), owner), False

    def discard(self, job_id: str, owner: str) -> None:
        """Remove a job that could not be queued, as if it had never been submitted."""
        keys = JobKeys.of(job_id)
        self._discard(keys, [self.ttl], index=index_key_for(owner))
        self.bulk.delete(keys.arrays)

    def get(self, job_id: str, owner: str | None = None, *, with_result: bool = True) -> dict | None:
        """The job as the API shows it, its result spliced in as raw JSON; None if unknown, expired or not owner's."""
        return self._views([job_id], owner, with_result)[0]

    def _views(
        self, job_ids: list[str], owner: str | None, with_result: bool, model: type[JobSummary] = Job
    ) -> list[dict | None]:
        """Several jobs as the API shows them, read in one round trip; without results, the result key is not read."""

        def read(pipe: Pipeline) -> None:
            for job_id in job_ids:
                keys = JobKeys.of(job_id)
                pipe.hgetall(keys.record)
                (pipe.mget if with_result else pipe.exists)(keys.packed_result, keys.result)  # exists: a stand-in
                pipe.llen(keys.losses)
                pipe.lindex(keys.losses, -1)

        replies = self._read_together(read)
        jobs = [
            ({key.decode(): value.decode() for key, value in record.items()}, results, epochs_done, last_loss)
            for record, results, epochs_done, last_loss in zip(*[iter(replies)] * 4, strict=True)
        ]
        in_bulk = [
            attempt_result_key_for(fields["id"], fields["result_attempt"])
            for fields, *_ in jobs
            if with_result and "result_attempt" in fields
        ]
        bulk_results = iter(self.bulk.mget(in_bulk) if in_bulk else [])
        views = []
        for fields, results, epochs_done, last_loss in jobs:
            visible = fields and (owner is None or fields.get("owner") == owner)
            result = None
            if with_result:
                result = next(bulk_results) if "result_attempt" in fields else _either(results)
            views.append(
                self._view(fields, result and result_json(result), epochs_done, last_loss, model) if visible else None
            )
        return views

    def _read_together(self, read: Callable[[Pipeline], None]) -> list:
        """Run the reads `read` queues in one transaction, so they see one state of the job.

        A full Redis refuses every command inside MULTI, reads included; then the reads go in a plain pipeline
        (still one round trip; a job that changes meanwhile may be seen half before, half after the change).
        """
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                read(pipe)
                return pipe.execute()
        except OutOfMemoryError:
            with self.redis.pipeline(transaction=False) as pipe:
                read(pipe)
                return pipe.execute()

    def request_json(self, job_id: str) -> bytes | None:
        """The job's request as JSON, its arrays as shapes (their data is gone once the job ended); None once expired.

        A job of the previous release has its whole request (arrays in base64), in which the shapes are too.
        """
        keys = JobKeys.of(job_id)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.record, "request")
            pipe.get(keys.request)
            return _either(pipe.execute())

    def result(self, job_id: str) -> bytes | None:
        """The finished job's result as stored (shared.packing reads it, either format); None if none."""
        keys = JobKeys.of(job_id)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.record, "result_attempt")
            pipe.mget(keys.packed_result, keys.result)
            attempt, results = pipe.execute()
        return self.bulk.get(attempt_result_key_for(job_id, attempt.decode())) if attempt else _either(results)

    def losses(self, job_id: str, since: int, owner: str | None = None) -> dict | None:
        """The losses of the epochs after `since` with the job's status; None if unknown or not the owner's."""
        keys = JobKeys.of(job_id)

        def read(pipe: Pipeline) -> None:
            pipe.hmget(keys.record, "status", "epochs", "kind", "owner")
            pipe.lrange(keys.losses, since, -1)
            pipe.llen(keys.losses)

        (status, epochs, kind, job_owner), losses, epochs_done = self._read_together(read)
        if status is None or owner is not None and job_owner.decode() != owner:
            return None
        return {
            "kind": kind.decode(),
            "losses": [float(loss) for loss in losses],
            "since": since,
            "epochs_done": epochs_done,
            "epochs": int(epochs or 0),
            "status": status.decode(),
        }

    def cancel(self, job_id: str, owner: str | None = None) -> str | None:
        """Cancel a queued job, ask a running one to stop; return the status after, or None if unknown."""
        keys = JobKeys.of(job_id)
        status = self._cancel(keys, [self.ttl, _now(), owner or ""])
        if status == b"cancelled":
            self.bulk.delete(keys.arrays)
        return status.decode() if status else None

    def jobs(
        self, owner: str, *, status: str | None, kind: str | None, limit: int, before: int | None
    ) -> tuple[list[dict], int | None]:
        """The owner's jobs (without results), newest first, after the cursor `before`; and the next cursor."""
        index = index_key_for(owner)
        found: list[dict] = []
        upper, last = f"({before}" if before is not None else "+inf", None
        while len(found) < limit:
            page = self.redis.zrevrangebyscore(index, upper, "-inf", start=0, num=limit, withscores=True)
            if not page:
                return found, None
            views = self._views([member.decode() for member, _ in page], owner, with_result=False, model=JobSummary)
            for (member, score), job in zip(page, views, strict=True):
                upper = f"({int(score)}"
                if job is None:
                    self.redis.zrem(index, member)  # expired: forget it
                elif status in (None, job["status"]) and kind in (None, job["kind"]):
                    found.append(job)
                    last = int(score)
                    if len(found) == limit:
                        break
        more = self.redis.zcount(index, "-inf", f"({last}") > 0
        return found, last if more else None

    def events(self, job_id: str, after: str, block_seconds: float) -> list[Event]:
        """The job's events after the event id `after`, waiting up to `block_seconds` for one if there is none."""
        reply = self.blocking.xread(
            {JobKeys.of(job_id).events: after}, count=1000, block=max(1, int(block_seconds * 1000))
        )
        return [_event(entry_id, fields) for _, entries in reply for entry_id, fields in entries]

    def wait_until_finished(self, job_id: str, timeout: float, *, fresh: bool = False) -> bool:
        """Block (on the job's event stream, not by polling) until the job has finished or `timeout` passed.

        A `fresh` job, created just now, has no events to skip: its stream is read from the start.
        """
        deadline = time.monotonic() + timeout
        after = "0-0"
        if not fresh:
            last = self.redis.xrevrange(JobKeys.of(job_id).events, count=1)
            if last and _event(*last[0]).type == "status":
                return True
            after = last[0][0].decode() if last else after
        while (remaining := deadline - time.monotonic()) > 0:
            for event in self.events(job_id, after, min(remaining, STREAM_BLOCK_SECONDS)):
                if event.type == "status":
                    return True
                after = event.id
        return False

    def ping(self) -> bool:
        return bool(self.redis.ping())

    def ping_bulk(self) -> bool:
        """The bulk Redis's answer (the same Redis's when big arrays share it)."""
        return bool(self.bulk.ping())

    def memory(self) -> "Memory":
        """How much memory Redis uses, its limit, and whether it takes a write now (a tiny key, soon gone)."""
        try:
            writable = bool(self.redis.set(WRITE_PROBE_KEY, b"1", px=10_000))
        except OutOfMemoryError:
            writable = False
        info = self.redis.info("memory")
        return Memory(int(info["used_memory"]), int(info.get("maxmemory", 0)), writable)

    def counts(self) -> "JobCounts":
        """The job counters: submitted, finished by status, epochs run, run times (api.telemetry exports them)."""
        return JobCounts.parse(self.redis.hgetall(METRICS_KEY))

    # --- used by workers -------------------------------------------------------------------

    def claim_sweep(self, owner: str, seconds: float) -> bool:
        """Whether this caller may run the reconciler's sweep now: one sweep per `seconds`, whoever runs it."""
        return bool(self.redis.set(RECONCILER_LOCK_KEY, owner, px=max(1, int(seconds * 1000)), nx=True))

    def due_jobs(self, limit: int) -> list[DueJob]:
        """Up to `limit` unfinished jobs whose time to be looked at has come, oldest first.

        Reads the index of unfinished jobs by score (not KEYS or SCAN): the cost is that of `limit` jobs,
        however many jobs Redis holds. Ids whose job expired or finished are dropped from the index.
        """
        seconds, microseconds = self.redis.time()
        now_ms = seconds * 1000 + microseconds // 1000
        due = []
        for index in (UNFINISHED_KEY, LEGACY_UNFINISHED_KEY):
            ids = [member.decode() for member in self.redis.zrangebyscore(index, "-inf", now_ms, 0, limit - len(due))]
            if not ids:
                continue
            with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hmget(JobKeys.of(job_id).record, "kind", "status", "attempts", "queue")
                records = pipe.execute()
            stale = []
            for job_id, (kind, status, attempts, device) in zip(ids, records, strict=True):
                if status in (b"queued", b"running") and kind is not None:
                    device = (device or b"cpu").decode()
                    due.append(DueJob(job_id, kind.decode(), status.decode(), attempts.decode(), device, index))
                else:
                    stale.append(job_id)
            if stale:
                self.redis.zrem(index, *stale)
        return due

    def look_again(self, job_ids: list[str], seconds: float) -> None:
        """Put off the reconciler's next look at these jobs (they have a message) by `seconds`."""
        if job_ids:
            seconds_now, microseconds = self.redis.time()
            at = seconds_now * 1000 + microseconds // 1000 + int(seconds * 1000)
            for index in (UNFINISHED_KEY, LEGACY_UNFINISHED_KEY):
                self.redis.zadd(index, dict.fromkeys(job_ids, at), xx=True)

    def reconcile(self, job: DueJob, max_requeues: int) -> str:
        """Claim a due job that has no message for a requeue: 'requeue', 'exhausted', or why not (see RECONCILE)."""
        args = [self.ttl, job.id, job.status, job.attempts, self.message_check_seconds, max_requeues]
        return self._reconcile(JobKeys.of(job.id), args, unfinished=job.index).decode()

    def start(self, job_id: str, device: str) -> Attempt | None:
        """Begin an attempt on `device` at a queued (or redelivered) job; None if it is finished, cancelled or gone.

        Raises AttemptsExhausted, after failing the job, when this would be one attempt too many.
        """
        keys = JobKeys.of(job_id)
        args = [self.ttl, _now(), self.max_attempts, INLINE_BYTES, device, self.attempt_deadline_seconds]
        (number, request_id, *stored), replicas = self._replicated(self._start, keys, args)
        if number > 0 and replicas < 1:  # unconfirmed: hand the job back, do not run an attempt a failover may forget
            raise NotReplicated(
                f"no replica confirmed attempt {number} of job {job_id} within {self.replica_wait_seconds} s"
            )
        if number < 0:
            detail = (
                f"the job was started {-number - 1} times and its worker died each time "
                "(killed, out of memory or over the time limit); it will not be retried"
            )
            problem = Problem(type="/problems/worker-lost", title="Worker lost", status=500, detail=detail)
            self.fail(job_id, None, problem)
            raise AttemptsExhausted(detail)
        if number <= 0:
            return None
        skeleton, inline = stored
        payload = inline or (self.bulk.get(keys.arrays) if skeleton else self.redis.get(keys.request))
        if payload is None:  # ended meanwhile (then this changes nothing), or its arrays were lost with the bulk Redis
            detail = (
                "the job's arrays are gone from the bulk Redis (BULK_REDIS_URL: its data was lost); "
                "submit the job again"
            )
            problem = Problem(type="/problems/request-lost", title="Request lost", status=500, detail=detail)
            self.fail(job_id, None, problem)
            return None
        request = Packed(skeleton, payload) if skeleton else Packed(payload, None)
        return Attempt(job_id, number, request, request_id.decode() or None)

    def record_epochs(self, attempt: Attempt, first_epoch: int, losses: list[float]) -> "EpochsRecorded":
        """Record the losses of epochs first_epoch, first_epoch + 1, ... once, whatever the redeliveries.

        Say whether the run should go on (not cancelled, nor superseded by a later attempt) and how many epochs the
        job has stored now.
        """
        args = [self.ttl, attempt.number, first_epoch, *map(repr, losses)]
        go_on, stored = self._while_replicas_missing(lambda: self._record_epochs(JobKeys.of(attempt.job_id), args))
        return EpochsRecorded(bool(go_on), stored)

    def succeed(self, attempt: Attempt, result: bytes, run_seconds: float | None = None) -> str | None:
        """Finish the job with its packed result (shared.packing), or as cancelled if that was asked; None if not this
        attempt's to finish."""
        return self._finish_job(attempt.job_id, attempt.number, "succeeded", run_seconds, result=result)

    def fail(
        self, job_id: str, attempt: Attempt | None, error: Problem, run_seconds: float | None = None
    ) -> str | None:
        """Finish the job as failed with an error a person can act on."""
        number = attempt.number if attempt is not None else None
        error_json = error.model_dump_json(exclude_none=True).encode()
        return self._finish_job(job_id, number, "failed", run_seconds, error=error_json)

    def _finish_job(
        self,
        job_id: str,
        number: int | None,
        status: str,
        run_seconds: float | None,
        result: bytes = b"",
        error: bytes = b"",
    ) -> str | None:
        timing = ["", ""] if run_seconds is None else [repr(run_seconds), run_time_bucket(run_seconds)]
        attempt = "" if number is None else number
        keys, aside = JobKeys.of(job_id), attempt_result_key_for(job_id, attempt)
        in_bulk = len(result) > INLINE_BYTES
        if in_bulk:
            try:
                self._write(aside, result, self.result_ttl)
            except OutOfMemoryError:
                # A full Redis refuses the SET, but never FINISH (which writes before it grows memory, and a script
                # that has written runs to its end): the result rides along, at a few ms per MB, and the job ends now.
                in_bulk = False
        args = [self.ttl, attempt, _now(), status, error, *timing, b"" if in_bulk else result, "1" if in_bulk else ""]
        final, replicas = self._replicated(self._finish, keys, args)
        if in_bulk and not final:
            self.bulk.delete(aside)  # not this attempt's to finish: its result is no one's
        if replicas < 1:  # unconfirmed: keep the message (and the arrays), so a job a failover forgets runs again
            raise NotReplicated(f"no replica confirmed the end of job {job_id} within {self.replica_wait_seconds} s")
        if final:
            self.bulk.delete(keys.arrays)
        return final.decode() if final else None

    def _replicated(self, script: _Script, keys: JobKeys, args: list, **other_keys: str) -> tuple[object, int]:
        """Run a script, then, with replicas, WAIT for one of them to hold its writes: its reply and how many did.

        Both go in one pipeline, so WAIT runs on the connection that wrote (WAIT counts that connection's writes),
        even when redis-py retries them on a new connection after a failover. Without replicas: the reply and 1.
        """
        if self.replica_wait_seconds is None:
            return script(keys, args, **other_keys), 1

        def write_and_wait() -> list:
            with self.redis.pipeline(transaction=False) as pipe:
                script(keys, args, client=pipe, **other_keys)
                pipe.wait(1, max(1, int(self.replica_wait_seconds * 1000)))
                return pipe.execute()

        reply, replicas = self._while_replicas_missing(write_and_wait)
        return reply, replicas

    def _while_replicas_missing(self, call: Callable[[], object]):
        """Call again, for up to replica_patience_seconds, while the primary refuses it for want of replicas.

        Safe to repeat: Redis refuses a script at its first write, so a script refused so has written nothing.
        """
        deadline = time.monotonic() + self.replica_patience_seconds
        while True:
            try:
                return call()
            except ResponseError as error:
                if not replicas_missing(error) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def _write(self, key: str, value: bytes, ttl: int) -> None:
        """SET a big value in the bulk Redis, in pieces; none of it is left behind if that fails.

        Under sentinels big values share the replicated primary, and the script that names this key (CREATE,
        FINISH) may run on the next primary after a failover: so a replica must hold the value before that script
        runs, as WAIT makes sure of on the connection that wrote it (NotReplicated if none does in time).
        """
        # In pieces: Redis holds a command's whole argument, and a copy in its AOF buffer, before it runs it.
        view = memoryview(value).cast("B")
        replicated = self.replica_wait_seconds is not None and self.bulk is self.redis

        def write() -> list:
            with self.bulk.pipeline(transaction=False) as pipe:
                pipe.set(key, view[:WRITE_BYTES], ex=ttl)
                for low in range(WRITE_BYTES, len(value), WRITE_BYTES):
                    pipe.append(key, view[low : low + WRITE_BYTES])
                if replicated:
                    pipe.wait(1, max(1, int(self.replica_wait_seconds * 1000)))
                return pipe.execute()

        try:
            replies = self._while_replicas_missing(write)  # repeatable: the SET comes first and replaces
            if replicated and replies[-1] < 1:
                raise NotReplicated(f"no replica confirmed {key} within {self.replica_wait_seconds} s")
        except RedisError:
            with contextlib.suppress(RedisError):  # a full Redis still deletes: leave no half value behind
                self.bulk.delete(key)
            raise

    # --- the job as the API shows it -------------------------------------------------------

    @staticmethod
    def _view(
        fields: dict[str, str],
        result: bytes | None,
        epochs_done: int,
        last_loss: bytes | None,
        model: type[JobSummary] = Job,
    ) -> dict:
        """The job as the API answers it: a dump of `model` (Job, or JobSummary in lists), its JSON parts unparsed.

        Built without validation (the store wrote every field), so the answer has exactly the model's fields.
        """
        progress = None
        if "epochs" in fields:
            loss = float(last_loss) if last_loss is not None else None
            progress = {"epoch": epochs_done, "epochs": int(fields["epochs"]), "loss": loss}
        error = fields.get("error")
        view = {
            "id": fields["id"],
            "kind": fields["kind"],
            "status": fields["status"],
            "attempts": int(fields["attempts"]),
            "created_at": fields["created_at"],
            "started_at": fields.get("started_at"),
            "finished_at": fields.get("finished_at"),
            "expires_at": _iso(datetime.fromtimestamp(int(fields["expires_at_ms"]) / 1000, UTC)),
            "queue": fields.get("queue", "cpu"),  # jobs from before queues by device ran on CPU workers
            "device": fields.get("device"),
            "progress": progress,
            "result": orjson.Fragment(result) if result is not None else None,
            "error": orjson.Fragment(error) if error is not None else None,
        }
        # warnings off: result and error are orjson.Fragments, passed through as they are.
        return model.model_construct(**view).model_dump(warnings=False)


def _either(values: list[bytes | None]) -> bytes | None:
    """The first value that exists: this release's, else the previous release's."""
    return next((value for value in values if value is not None), None)


def _hash(request: Packed) -> str:
    """The request's fingerprint, which a repeated Idempotency-Key must match."""
    digest = hashlib.sha256(request.skeleton)
    digest.update(request.arrays or b"")
    return digest.hexdigest()


def _event(entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
    values = {key.decode(): value.decode() for key, value in fields.items()}
    epoch, loss = values.get("epoch"), values.get("loss")
    return Event(
        entry_id.decode(), values["type"], int(epoch) if epoch else None, float(loss) if loss is not None else None
    )
