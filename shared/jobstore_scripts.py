"""The Lua scripts behind every change of a job's state, each one atomic in Redis.

The KEYS are built by shared.jobstore (the one module that names keys): every
script takes 1 record, 2 request, 3 result, 4 losses, 5 events, 6 metrics;
CREATE and DISCARD also take 7 the owner's job index and 8 the idempotency key
(or ''), CREATE 9 the submission counter and 10 the Celery queue; FINISH 7 the attempt's pending result.
The scripts that begin or end a job take the index of unfinished jobs last (CREATE 11, DISCARD 9,
START 7, FINISH 8, CANCEL 7, RECONCILE 7): each job's id scored by when the reconciler should look at
it if nothing else has happened by then (shared.jobstore.JobStore.due_jobs).
The first five expire with the job; ARGV[1] is always the retention.

Redis at maxmemory (noeviction) refuses a command that may grow memory only while the script has
written nothing yet (Redis 6.2 and 7 alike): a script is refused whole or runs to its end, never
half. So CREATE, CANCEL, RECORD_EPOCHS and RECONCILE, whose first write grows memory, are refused
by a full Redis, while START and FINISH, which begin by refreshing expiry times, always run: a job
can always be started and ended, so long as its request and result travel through the script.

Big requests and results are written and read with plain SET and GET, not passed through a script:
Redis copies a script's arguments and replies into Lua and back: a script call carrying a 5.6 MB
value took 4-20 ms in Redis's SLOWLOG (measured), time in which Redis serves no one else. Small ones
(up to the inline limit the caller passes) ride along with the script, saving a round trip.
"""

# Redis's clock in milliseconds: every host then agrees on when a job is due.
_NOW_MS = """
local function _now_ms()
  local clock = redis.call('TIME')
  return clock[1] * 1000 + math.floor(clock[2] / 1000)
end
"""

# Refresh the job's retention, and its idempotency key's if it has one; note when it will expire. A record that
# has expired is not written again (a bare expires_at_ms would make a key that never expires).
_EXPIRE_JOB = """
for i = 2, 5 do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
if redis.call('EXPIRE', KEYS[1], ARGV[1]) == 1 then
  local clock = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'expires_at_ms', clock[1] * 1000 + math.floor(clock[2] / 1000) + ARGV[1] * 1000)
  local idempotency = redis.call('HGET', KEYS[1], 'idempotency_key')
  if idempotency then redis.call('EXPIRE', idempotency, ARGV[1]) end
end
"""

# ARGV: ttl, job id, request hash, queue capacity, the request ('' if already stored in KEYS[2]: a refusal
# deletes it), seconds until the reconciler checks that the job's message was sent, then the record's fields
# as name, value, ...
# Returns {1, job id, expires_at_ms} when created, {0, existing job id, its request hash} for a repeated
# idempotency key, {-1} when the queue holds `capacity` messages or more (a replay is answered even then).
CREATE = (
    _NOW_MS
    + """
local existing = KEYS[8] ~= '' and redis.call('HMGET', KEYS[8], 'job_id', 'hash') or {}
if existing[1] then redis.call('DEL', KEYS[2]) return {0, existing[1], existing[2]} end
if redis.call('LLEN', KEYS[10]) >= tonumber(ARGV[4]) then redis.call('DEL', KEYS[2]) return {-1} end
if KEYS[8] ~= '' then redis.call('HSET', KEYS[8], 'job_id', ARGV[2], 'hash', ARGV[3]) end
if ARGV[5] ~= '' then redis.call('SET', KEYS[2], ARGV[5]) end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
if KEYS[8] ~= '' then redis.call('HSET', KEYS[1], 'idempotency_key', KEYS[8]) end
redis.call('ZADD', KEYS[7], redis.call('INCR', KEYS[9]), ARGV[2])
redis.call('ZADD', KEYS[11], _now_ms() + ARGV[6] * 1000, ARGV[2])
redis.call('HINCRBY', KEYS[6], 'submitted:' .. redis.call('HGET', KEYS[1], 'kind'), 1)
"""
    + _EXPIRE_JOB
    + """
return {1, ARGV[2], redis.call('HGET', KEYS[1], 'expires_at_ms')}
"""
)

# Undo CREATE for a job that could not be queued. ARGV: ttl (unused). Deletes first, so a full Redis runs it
# to the end; the metric, last, may be skipped all the same.
DISCARD = """
local kind = redis.call('HGET', KEYS[1], 'kind')
if not kind then return 0 end
local idempotency = redis.call('HGET', KEYS[1], 'idempotency_key')
if idempotency then redis.call('DEL', idempotency) end
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('ZREM', KEYS[7], id)
redis.call('ZREM', KEYS[9], id)
for i = 1, 5 do redis.call('DEL', KEYS[i]) end
redis.pcall('HINCRBY', KEYS[6], 'submitted:' .. kind, -1)
return 1
"""

# ARGV: ttl, now, max_attempts, inline limit, device, seconds after which an attempt that has not ended
# holds no message any more (its worker's message would have been redelivered by then).
# Returns {attempt, request id, request} (the request '' if over the
# limit: the caller GETs it) or {0, reason}.
START = (
    _NOW_MS
    + _EXPIRE_JOB
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {0, 'gone'} end
if status ~= 'queued' and status ~= 'running' then return {0, status} end
local size = redis.call('STRLEN', KEYS[2])
if size == 0 then return {0, 'gone'} end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if attempt > tonumber(ARGV[3]) then return {-attempt, 'exhausted'} end
redis.call('HSET', KEYS[1], 'status', 'running', 'device', ARGV[5])
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[2])
redis.call('ZADD', KEYS[7], _now_ms() + ARGV[6] * 1000, redis.call('HGET', KEYS[1], 'id'))
local request = size <= tonumber(ARGV[4]) and redis.call('GET', KEYS[2]) or ''
return {attempt, redis.call('HGET', KEYS[1], 'request_id') or '', request}
"""
)

# ARGV: ttl, attempt, first epoch, then the losses of that epoch and the ones after it. Each loss is appended, with
# a progress event, only if it is the next epoch's: a redelivered attempt does not record an epoch twice.
# Returns 1 to go on, 0 to stop (cancelled or superseded by a later attempt).
RECORD_EPOCHS = """
if redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[2] then return 0 end
local recorded = 0
for i = 4, #ARGV do
  local epoch = tonumber(ARGV[3]) + i - 4
  if redis.call('LLEN', KEYS[4]) == epoch - 1 then
    redis.call('RPUSH', KEYS[4], ARGV[i])
    redis.call('XADD', KEYS[5], epoch .. '-0', 'type', 'progress', 'epoch', epoch, 'loss', ARGV[i])
    recorded = recorded + 1
  end
end
if recorded > 0 then
  redis.call('EXPIRE', KEYS[4], ARGV[1])
  redis.call('EXPIRE', KEYS[5], ARGV[1])
  redis.call('HINCRBY', KEYS[6], 'epochs', recorded)
end
if redis.call('HGET', KEYS[1], 'cancel_requested') then return 0 end
return 1
"""

# A success's result comes as ARGV[8], or, when big, waits in KEYS[7] (the attempt's pending result), renamed to
# the result key only if this attempt may finish the job, else deleted.
# ARGV: ttl, attempt (or '' for any), now, status, error JSON, run seconds, run time bucket, result JSON or ''.
# A success asked to cancel becomes cancelled. Returns the final status, or false if not this attempt's to finish.
FINISH = (
    _EXPIRE_JOB
    + """
local record = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'cancel_requested', 'kind')
local current = record[1] and (record[1] == 'running' or record[1] == 'queued')
if not current or ARGV[2] ~= '' and record[2] ~= ARGV[2] then redis.call('DEL', KEYS[7]) return false end
local status = ARGV[4]
if status == 'succeeded' and record[3] then status = 'cancelled' end
redis.call('HSET', KEYS[1], 'status', status, 'finished_at', ARGV[3])
redis.call('ZREM', KEYS[8], redis.call('HGET', KEYS[1], 'id'))
if status == 'succeeded' and ARGV[8] ~= '' then
  redis.call('SET', KEYS[3], ARGV[8], 'EX', ARGV[1])
elseif status == 'succeeded' then
  redis.call('RENAME', KEYS[7], KEYS[3])
else
  redis.call('DEL', KEYS[7])
end
if status == 'failed' then redis.call('HSET', KEYS[1], 'error', ARGV[5]) end
redis.call('XADD', KEYS[5], '*', 'type', 'status', 'status', status)
redis.call('EXPIRE', KEYS[5], ARGV[1])
local kind = record[4]
redis.call('HINCRBY', KEYS[6], 'finished:' .. kind .. ':' .. status, 1)
if ARGV[7] ~= '' then
  redis.call('HINCRBY', KEYS[6], 'run_seconds_bucket:' .. kind .. ':' .. ARGV[7], 1)
  redis.call('HINCRBYFLOAT', KEYS[6], 'run_seconds_sum:' .. kind, ARGV[6])
end
return status
"""
)

# ARGV: ttl, now, owner (or '' for any). A queued job is cancelled at once; a running one is flagged.
# Returns the status after, or false for an unknown job or another owner's.
CANCEL = (
    """
local record = redis.call('HMGET', KEYS[1], 'status', 'kind', 'owner')
local status = record[1]
if not status or ARGV[3] ~= '' and record[3] ~= ARGV[3] then return false end
if status == 'running' then redis.call('HSET', KEYS[1], 'cancel_requested', '1') end
if status ~= 'queued' then return status end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[2])
redis.call('ZREM', KEYS[7], redis.call('HGET', KEYS[1], 'id'))
redis.call('XADD', KEYS[5], '*', 'type', 'status', 'status', 'cancelled')
redis.call('HINCRBY', KEYS[6], 'finished:' .. record[2] .. ':cancelled', 1)
"""
    + _EXPIRE_JOB
    + """
return 'cancelled'
"""
)

# A job the reconciler found due, with no message in the queue or held by a worker: count a requeue and look
# again after a while, provided nothing happened to the job since it was read (status and attempt unchanged,
# still due). ARGV: ttl (unused), job id, status read, attempts read, seconds until the next look, most requeues.
# Returns 'requeue' (the caller sends a new message), 'exhausted' (too many: the caller fails the job),
# or why nothing was done: 'gone' (expired), a final status, 'moved' (the job changed meanwhile).
RECONCILE = (
    _NOW_MS
    + """
local record = redis.call('HMGET', KEYS[1], 'status', 'attempts')
if not record[1] then redis.call('ZREM', KEYS[7], ARGV[2]) return 'gone' end
if record[1] ~= 'queued' and record[1] ~= 'running' then redis.call('ZREM', KEYS[7], ARGV[2]) return record[1] end
local due = redis.call('ZSCORE', KEYS[7], ARGV[2])
if not due or tonumber(due) > _now_ms() or record[1] ~= ARGV[3] or record[2] ~= ARGV[4] then return 'moved' end
local requeues = redis.call('HINCRBY', KEYS[1], 'requeues', 1)
redis.call('ZADD', KEYS[7], _now_ms() + ARGV[5] * 1000, ARGV[2])
if requeues > tonumber(ARGV[6]) then return 'exhausted' end
return 'requeue'
"""
)
