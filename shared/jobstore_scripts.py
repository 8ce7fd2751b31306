"""The Lua scripts behind every change of a job's state, each one atomic in Redis.

The scripts name their keys, never KEYS[n]: `record_key`, `request_key`, ... are Lua locals that
shared.jobstore (the one module that names keys) declares from KEYS in the order it passes them:
its JobKeys (record, request, result, losses, events, metrics, arrays, packed_result) and, beside it,
each script's extra keys (SCRIPT_KEYS): the owner's job index, the idempotency key (or ''), the submission counter, the
Celery queue, and `unfinished_key`, the index of unfinished jobs, each
job's id scored by when the reconciler should look at it if nothing else has happened by then
(shared.jobstore.JobStore.due_jobs). The job's own keys expire with it; ARGV[1] is always the record's retention,
and the record's `result_ttl` (written at creation) the result's and the losses'.

A job's request arrays (arrays_key) are deleted as the job ends (FINISH, CANCEL of a queued job, DISCARD), and
START refuses a job whose arrays are gone: a message redelivered after the end never runs the job again.

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

# The retention of the job's result and losses: its own (RESULT_TTL_SECONDS), or, for a job of the previous
# release, the record's.
_RESULT_TTL = """
local result_ttl = redis.call('HGET', record_key, 'result_ttl') or ARGV[1]
"""

# Refresh the job's retention, and its idempotency key's if it has one; note when it will expire. A record that
# has expired is not written again (a bare expires_at_ms would make a key that never expires).
_EXPIRE_JOB = (
    _RESULT_TTL
    + """
for _, key in ipairs({request_key, arrays_key, events_key}) do redis.call('EXPIRE', key, ARGV[1]) end
for _, key in ipairs({result_key, packed_result_key, losses_key}) do redis.call('EXPIRE', key, result_ttl) end
if redis.call('EXPIRE', record_key, ARGV[1]) == 1 then
  local clock = redis.call('TIME')
  redis.call('HSET', record_key, 'expires_at_ms', clock[1] * 1000 + math.floor(clock[2] / 1000) + ARGV[1] * 1000)
  local idempotency = redis.call('HGET', record_key, 'idempotency_key')
  if idempotency then redis.call('EXPIRE', idempotency, ARGV[1]) end
end
"""
)

# ARGV: ttl, job id, request hash, queue capacity, the request's arrays ('' if already stored at arrays_key: a
# refusal deletes them), seconds until the reconciler checks that the job's message was sent, then the record's fields
# as name, value, ...
# Returns {1, job id, expires_at_ms} when created, {0, existing job id, its request hash} for a repeated
# idempotency key, {-1} when the queue holds `capacity` messages or more (a replay is answered even then).
CREATE = (
    _NOW_MS
    + """
local existing = idempotency_key ~= '' and redis.call('HMGET', idempotency_key, 'job_id', 'hash') or {}
if existing[1] then redis.call('DEL', arrays_key) return {0, existing[1], existing[2]} end
if redis.call('LLEN', queue_key) >= tonumber(ARGV[4]) then redis.call('DEL', arrays_key) return {-1} end
if idempotency_key ~= '' then redis.call('HSET', idempotency_key, 'job_id', ARGV[2], 'hash', ARGV[3]) end
if ARGV[5] ~= '' then redis.call('SET', arrays_key, ARGV[5]) end
redis.call('HSET', record_key, unpack(ARGV, 7))
if idempotency_key ~= '' then redis.call('HSET', record_key, 'idempotency_key', idempotency_key) end
redis.call('ZADD', index_key, redis.call('INCR', sequence_key), ARGV[2])
redis.call('ZADD', unfinished_key, _now_ms() + ARGV[6] * 1000, ARGV[2])
redis.call('HINCRBY', metrics_key, 'submitted:' .. redis.call('HGET', record_key, 'kind'), 1)
"""
    + _EXPIRE_JOB
    + """
return {1, ARGV[2], redis.call('HGET', record_key, 'expires_at_ms')}
"""
)

# Undo CREATE for a job that could not be queued. ARGV: ttl (unused). Deletes first, so a full Redis runs it
# to the end; the metric, last, may be skipped all the same.
DISCARD = """
local kind = redis.call('HGET', record_key, 'kind')
if not kind then return 0 end
local idempotency = redis.call('HGET', record_key, 'idempotency_key')
if idempotency then redis.call('DEL', idempotency) end
local id = redis.call('HGET', record_key, 'id')
redis.call('ZREM', index_key, id)
redis.call('ZREM', unfinished_key, id)
for _, key in ipairs({record_key, request_key, result_key, losses_key, events_key, arrays_key, packed_result_key}) do
  redis.call('DEL', key)
end
redis.pcall('HINCRBY', metrics_key, 'submitted:' .. kind, -1)
return 1
"""

# ARGV: ttl, now, max_attempts, inline limit, device, seconds after which an attempt that has not ended
# holds no message any more (its worker's message would have been redelivered by then).
# Returns {attempt, request id, skeleton, arrays} (the arrays '' if over the limit: the caller GETs them) or
# {0, reason}. A job of the previous release has no skeleton (''): its whole request JSON comes instead of arrays.
START = (
    _NOW_MS
    + _EXPIRE_JOB
    + """
local status = redis.call('HGET', record_key, 'status')
if not status then return {0, 'gone'} end
if status ~= 'queued' and status ~= 'running' then return {0, status} end
local skeleton = redis.call('HGET', record_key, 'request')
local stored_in = skeleton and arrays_key or request_key
local in_bulk = redis.call('HGET', record_key, 'arrays_in_bulk')  -- then the caller reads (and checks) them
local size = in_bulk and 0 or redis.call('STRLEN', stored_in)
if size == 0 and not in_bulk then return {0, 'gone'} end
local attempt = redis.call('HINCRBY', record_key, 'attempts', 1)
if attempt > tonumber(ARGV[3]) then return {-attempt, 'exhausted'} end
redis.call('HSET', record_key, 'status', 'running', 'device', ARGV[5])
redis.call('HSETNX', record_key, 'started_at', ARGV[2])
redis.call('ZADD', unfinished_key, _now_ms() + ARGV[6] * 1000, redis.call('HGET', record_key, 'id'))
local stored = (not in_bulk and size <= tonumber(ARGV[4])) and redis.call('GET', stored_in) or ''
return {attempt, redis.call('HGET', record_key, 'request_id') or '', skeleton or '', stored}
"""
)

# ARGV: ttl, attempt, first epoch, then the losses of that epoch and the ones after it. Each loss is appended, with
# a progress event, only if it is the next epoch's: a redelivered attempt does not record an epoch twice.
# Returns {1 to go on or 0 to stop (cancelled or superseded by a later attempt), the number of epochs stored}: fewer
# than the caller sent when a failover promoted a replica that missed the last batches, which the caller sends again.
RECORD_EPOCHS = (
    _RESULT_TTL
    + """
if redis.call('HGET', record_key, 'attempts') ~= ARGV[2] then return {0, redis.call('LLEN', losses_key)} end
local recorded = 0
for i = 4, #ARGV do
  local epoch = tonumber(ARGV[3]) + i - 4
  if redis.call('LLEN', losses_key) == epoch - 1 then
    redis.call('RPUSH', losses_key, ARGV[i])
    redis.call('XADD', events_key, epoch .. '-0', 'type', 'progress', 'epoch', epoch, 'loss', ARGV[i])
    recorded = recorded + 1
  end
end
if recorded > 0 then
  redis.call('EXPIRE', losses_key, result_ttl)
  redis.call('EXPIRE', events_key, ARGV[1])
  redis.call('HINCRBY', metrics_key, 'epochs', recorded)
end
if redis.call('HGET', record_key, 'cancel_requested') then return {0, redis.call('LLEN', losses_key)} end
return {1, redis.call('LLEN', losses_key)}
"""
)

# A success's packed result comes as ARGV[8], or, when big (ARGV[9] is '1'), waits in the bulk Redis under the
# attempt's own key: the record then names the attempt whose result it is (the caller deletes a refused one).
# The request's arrays go. ARGV: ttl, attempt (or '' for any), now, status, error JSON, run seconds, run time
# bucket, packed result or '', '1' if the result is in the bulk Redis.
# A success asked to cancel becomes cancelled. Returns the final status, or false if not this attempt's to finish.
# Sent again by the attempt whose big result the record names (its first reply lost to a timeout or a failover,
# and redis-py retried it), it returns that status again: false would have the caller delete the job's result.
FINISH = (
    _EXPIRE_JOB
    + """
local record = redis.call('HMGET', record_key, 'status', 'attempts', 'cancel_requested', 'kind', 'result_attempt')
local current = record[1] and (record[1] == 'running' or record[1] == 'queued')
if not current or ARGV[2] ~= '' and record[2] ~= ARGV[2] then
  if ARGV[2] ~= '' and record[5] == ARGV[2] then return record[1] end
  return false
end
local status = ARGV[4]
if status == 'succeeded' and record[3] then status = 'cancelled' end
redis.call('HSET', record_key, 'status', status, 'finished_at', ARGV[3])
redis.call('ZREM', unfinished_key, redis.call('HGET', record_key, 'id'))
redis.call('DEL', arrays_key)
if status == 'succeeded' and ARGV[9] ~= '' then
  redis.call('HSET', record_key, 'result_attempt', ARGV[2])
elseif status == 'succeeded' then
  redis.call('SET', packed_result_key, ARGV[8], 'EX', result_ttl)
end
if status == 'failed' then redis.call('HSET', record_key, 'error', ARGV[5]) end
redis.call('XADD', events_key, '*', 'type', 'status', 'status', status)
redis.call('EXPIRE', events_key, ARGV[1])
local kind = record[4]
redis.call('HINCRBY', metrics_key, 'finished:' .. kind .. ':' .. status, 1)
if ARGV[7] ~= '' then
  redis.call('HINCRBY', metrics_key, 'run_seconds_bucket:' .. kind .. ':' .. ARGV[7], 1)
  redis.call('HINCRBYFLOAT', metrics_key, 'run_seconds_sum:' .. kind, ARGV[6])
end
return status
"""
)

# ARGV: ttl, now, owner (or '' for any). A queued job is cancelled at once; a running one is flagged.
# Returns the status after, or false for an unknown job or another owner's.
CANCEL = (
    """
local record = redis.call('HMGET', record_key, 'status', 'kind', 'owner')
local status = record[1]
if not status or ARGV[3] ~= '' and record[3] ~= ARGV[3] then return false end
if status == 'running' then redis.call('HSET', record_key, 'cancel_requested', '1') end
if status ~= 'queued' then return status end
redis.call('HSET', record_key, 'status', 'cancelled', 'finished_at', ARGV[2])
redis.call('ZREM', unfinished_key, redis.call('HGET', record_key, 'id'))
redis.call('DEL', arrays_key)
redis.call('XADD', events_key, '*', 'type', 'status', 'status', 'cancelled')
redis.call('HINCRBY', metrics_key, 'finished:' .. record[2] .. ':cancelled', 1)
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
local record = redis.call('HMGET', record_key, 'status', 'attempts')
if not record[1] then redis.call('ZREM', unfinished_key, ARGV[2]) return 'gone' end
if record[1] ~= 'queued' and record[1] ~= 'running' then
  redis.call('ZREM', unfinished_key, ARGV[2])
  return record[1]
end
local due = redis.call('ZSCORE', unfinished_key, ARGV[2])
if not due or tonumber(due) > _now_ms() or record[1] ~= ARGV[3] or record[2] ~= ARGV[4] then return 'moved' end
local requeues = redis.call('HINCRBY', record_key, 'requeues', 1)
redis.call('ZADD', unfinished_key, _now_ms() + ARGV[5] * 1000, ARGV[2])
if requeues > tonumber(ARGV[6]) then return 'exhausted' end
return 'requeue'
"""
)
