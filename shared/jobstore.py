"""The Redis job store: the only module that knows Redis keys, and the single source of truth of a job's state.

A job is four keys, all expiring `ttl` seconds after the job's last change:

    convq:job:<id>          hash: id, kind, status, timestamps, epochs, attempts, cancel flag, error
    convq:job:<id>:request  the validated request as JSON, written once at submission
    convq:job:<id>:result   the result as JSON, written once by the attempt that finishes the job
    convq:job:<id>:losses   list: the loss of epoch i at index i - 1

Workers may be killed and messages redelivered, so every state change is one
Lua script that checks the state it expects: an attempt number guards the
writes of each run, a loss is appended only if it is the next epoch's, and
only the current attempt may finish a job.
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from redis import Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from shared.schemas import JobKind, Problem
from shared.settings import Settings

_PREFIX = "convq:job:"
# Counters of every job ever seen, for /metrics; updated by the same scripts that change job states,
# so they agree with them exactly, whichever API process or worker made the change. Never expires.
METRICS_KEY = "convq:metrics"
# Upper bounds (seconds) of the job run time histogram's buckets.
RUN_TIME_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600)


def _keys(job_id: str) -> list[str]:
    """The job's keys: record, request, result, losses."""
    record = _PREFIX + job_id
    return [record, record + ":request", record + ":result", record + ":losses"]


def _script_keys(job_id: str) -> list[str]:
    """The keys the Lua scripts take: the job's, then the metrics hash."""
    return [*_keys(job_id), METRICS_KEY]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_time_bucket(seconds: float) -> str:
    """The label of the histogram bucket a run time falls in."""
    return next((f"{bound:g}" for bound in RUN_TIME_BUCKETS if seconds <= bound), "+Inf")


# KEYS: record, request, result, losses, metrics. ARGV[1]: ttl. The metrics hash never expires.
_EXPIRE_JOB = """
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
"""

# ARGV: ttl, now, max_attempts. Returns {attempt, request, request id} or {0, reason}.
_START = (
    _EXPIRE_JOB
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {0, 'gone'} end
if status ~= 'queued' and status ~= 'running' then return {0, status} end
local request = redis.call('GET', KEYS[2])
if not request then return {0, 'gone'} end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if attempt > tonumber(ARGV[3]) then return {-attempt, 'exhausted'} end
redis.call('HSET', KEYS[1], 'status', 'running')
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[2])
return {attempt, request, redis.call('HGET', KEYS[1], 'request_id') or ''}
"""
)

# ARGV: ttl, attempt, epoch, loss. Returns 1 to go on, 0 to stop (cancelled or superseded).
_RECORD_EPOCH = """
if redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[2] then return 0 end
if redis.call('LLEN', KEYS[4]) == tonumber(ARGV[3]) - 1 then
  redis.call('RPUSH', KEYS[4], ARGV[4])
  redis.call('EXPIRE', KEYS[4], ARGV[1])
  redis.call('HINCRBY', KEYS[5], 'epochs', 1)
end
if redis.call('HGET', KEYS[1], 'cancel_requested') then return 0 end
return 1
"""

# ARGV: ttl, attempt (or '' for any), now, status, result JSON, error JSON, run seconds, run time bucket.
# A success asked to cancel becomes cancelled. Returns the final status, or false if not this attempt's to finish.
_FINISH = (
    _EXPIRE_JOB
    + """
local record = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'cancel_requested', 'kind')
if not record[1] or record[1] ~= 'running' and record[1] ~= 'queued' then return false end
if ARGV[2] ~= '' and record[2] ~= ARGV[2] then return false end
local status = ARGV[4]
if status == 'succeeded' and record[3] then status = 'cancelled' end
redis.call('HSET', KEYS[1], 'status', status, 'finished_at', ARGV[3])
if status == 'succeeded' then redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[1]) end
if status == 'failed' then redis.call('HSET', KEYS[1], 'error', ARGV[6]) end
local kind = record[4]
redis.call('HINCRBY', KEYS[5], 'finished:' .. kind .. ':' .. status, 1)
if ARGV[8] ~= '' then
  redis.call('HINCRBY', KEYS[5], 'run_seconds_bucket:' .. kind .. ':' .. ARGV[8], 1)
  redis.call('HINCRBYFLOAT', KEYS[5], 'run_seconds_sum:' .. kind, ARGV[7])
end
return status
"""
)

# ARGV: ttl, now. A queued job is cancelled at once; a running one is flagged. Returns the status after, or false.
_CANCEL = """
local record = redis.call('HMGET', KEYS[1], 'status', 'kind')
local status = record[1]
if not status then return false end
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[2])
  for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
  redis.call('HINCRBY', KEYS[5], 'finished:' .. record[2] .. ':cancelled', 1)
  return 'cancelled'
end
if status == 'running' then redis.call('HSET', KEYS[1], 'cancel_requested', '1') end
return status
"""


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
    request: bytes
    request_id: str | None  # of the HTTP request that submitted the job, for the logs


@dataclass(frozen=True)
class JobMetrics:
    """What the metrics hash holds, by job kind."""

    submitted: dict[str, int]
    finished: dict[tuple[str, str], int]  # (kind, status) -> count
    epochs: int
    run_seconds_buckets: dict[tuple[str, str], int]  # (kind, bucket upper bound) -> count, not cumulative
    run_seconds_sum: dict[str, float]

    @classmethod
    def parse(cls, fields: dict[bytes, bytes]) -> "JobMetrics":
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


class AttemptsExhausted(Exception):
    """A job was started more times than allowed: its worker died on every attempt."""


class JobStore:
    """Jobs in Redis. The connection is passed in; nothing here is global."""

    def __init__(self, redis: Redis, ttl_seconds: int, max_attempts: int = 3):
        self.redis = redis
        self.ttl = ttl_seconds
        self.max_attempts = max_attempts
        self._start = redis.register_script(_START)
        self._record_epoch = redis.register_script(_RECORD_EPOCH)
        self._finish = redis.register_script(_FINISH)
        self._cancel = redis.register_script(_CANCEL)

    @classmethod
    def from_settings(cls, settings: Settings, *, patient: bool = False) -> "JobStore":
        """Connect as the settings say.

        The API is impatient: a lost Redis must turn into a 503 within seconds.
        Workers are patient: they ride out a Redis restart of up to about half a
        minute in the middle of a job rather than abandon it.
        """
        retry = PATIENT_RETRY if patient else IMPATIENT_RETRY
        redis = Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_timeout_seconds,
            socket_connect_timeout=settings.redis_timeout_seconds,
            retry=Retry(ExponentialWithJitterBackoff(base=retry.base, cap=retry.cap), retry.retries),
            health_check_interval=30,
        )
        return cls(redis, settings.job_ttl_seconds, settings.max_attempts)

    # --- used by the API -------------------------------------------------------------------

    def create(
        self, kind: JobKind, request_json: bytes, epochs: int | None = None, request_id: str | None = None
    ) -> dict:
        """Store a new queued job and its request; return the job as the API shows it."""
        job_id = str(uuid.uuid4())
        record = {"id": job_id, "kind": kind, "status": "queued", "created_at": _now(), "attempts": 0}
        if epochs is not None:
            record["epochs"] = epochs
        if request_id is not None:
            record["request_id"] = request_id
        record_key, request_key, _, _ = _keys(job_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(record_key, mapping=record)
            pipe.expire(record_key, self.ttl)
            pipe.set(request_key, request_json, ex=self.ttl)
            pipe.hincrby(METRICS_KEY, f"submitted:{kind}", 1)
            pipe.execute()
        return self._view({key: str(value) for key, value in record.items()}, None, 0, None)

    def discard(self, job_id: str, kind: JobKind) -> None:
        """Remove a job that could not be queued, as if it had never been submitted."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*_keys(job_id))
            pipe.hincrby(METRICS_KEY, f"submitted:{kind}", -1)
            pipe.execute()

    def get(self, job_id: str) -> dict | None:
        """Return the job as the API shows it, its result spliced in as raw JSON, or None if unknown or expired."""
        record_key, _, result_key, losses_key = _keys(job_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(record_key)
            pipe.get(result_key)
            pipe.llen(losses_key)
            pipe.lindex(losses_key, -1)
            record, result, epochs_done, last_loss = pipe.execute()
        if not record:
            return None
        fields = {key.decode(): value.decode() for key, value in record.items()}
        return self._view(fields, result, epochs_done, last_loss)

    def losses(self, job_id: str, since: int) -> dict | None:
        """Return the losses of the epochs after `since` with the job's status, or None if unknown."""
        record_key, _, _, losses_key = _keys(job_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(record_key, "status", "epochs", "kind")
            pipe.lrange(losses_key, since, -1)
            pipe.llen(losses_key)
            (status, epochs, kind), losses, epochs_done = pipe.execute()
        if status is None:
            return None
        return {
            "kind": kind.decode(),
            "losses": [float(loss) for loss in losses],
            "since": since,
            "epochs_done": epochs_done,
            "epochs": int(epochs or 0),
            "status": status.decode(),
        }

    def cancel(self, job_id: str) -> str | None:
        """Cancel a queued job, ask a running one to stop; return the status after, or None if unknown."""
        status = self._cancel(keys=_script_keys(job_id), args=[self.ttl, _now()])
        return status.decode() if status else None

    def ping(self) -> bool:
        return bool(self.redis.ping())

    def metrics(self) -> "JobMetrics":
        """The job counters: submitted, finished by status, epochs run, run times."""
        return JobMetrics.parse(self.redis.hgetall(METRICS_KEY))

    # --- used by workers -------------------------------------------------------------------

    def start(self, job_id: str) -> Attempt | None:
        """Begin an attempt at a queued (or redelivered running) job; None if it is finished, cancelled or gone.

        Raises AttemptsExhausted, after failing the job, when this would be one attempt too many.
        """
        number, payload, *request_id = self._start(
            keys=_script_keys(job_id), args=[self.ttl, _now(), self.max_attempts]
        )
        if number < 0:
            detail = (
                f"the job was started {-number - 1} times and its worker died each time "
                "(killed, out of memory or over the time limit); it will not be retried"
            )
            self.fail(
                job_id, None, Problem(type="/problems/worker-lost", title="Worker lost", status=500, detail=detail)
            )
            raise AttemptsExhausted(detail)
        return Attempt(job_id, number, payload, request_id[0].decode() or None) if number > 0 else None

    def record_epoch(self, attempt: Attempt, epoch: int, loss: float) -> bool:
        """Record epoch `epoch`'s loss once, whatever the redeliveries; return False if the run should stop."""
        args = [self.ttl, attempt.number, epoch, repr(loss)]
        return bool(self._record_epoch(keys=_script_keys(attempt.job_id), args=args))

    def succeed(self, attempt: Attempt, result_json: bytes, run_seconds: float | None = None) -> str | None:
        """Finish the job with its result, or as cancelled if that was asked; None if not this attempt's to finish."""
        return self._finish_job(attempt.job_id, attempt.number, "succeeded", run_seconds, result=result_json)

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
        args = [self.ttl, "" if number is None else number, _now(), status, result, error, *timing]
        final = self._finish(keys=_script_keys(job_id), args=args)
        return final.decode() if final else None

    # --- the job as the API shows it -------------------------------------------------------

    @staticmethod
    def _view(fields: dict[str, str], result: bytes | None, epochs_done: int, last_loss: bytes | None) -> dict:
        progress = None
        if "epochs" in fields:
            loss = float(last_loss) if last_loss is not None else None
            progress = {"epoch": epochs_done, "epochs": int(fields["epochs"]), "loss": loss}
        error = fields.get("error")
        return {
            "id": fields["id"],
            "kind": fields["kind"],
            "status": fields["status"],
            "attempts": int(fields["attempts"]),
            "created_at": fields["created_at"],
            "started_at": fields.get("started_at"),
            "finished_at": fields.get("finished_at"),
            "progress": progress,
            "result": orjson.Fragment(result) if result is not None else None,
            "error": orjson.Fragment(error) if error is not None else None,
        }
