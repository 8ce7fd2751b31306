"""The Lua scripts behind every change of a job's state, each one atomic in Redis.

The KEYS are built by shared.jobstore (the one module that names keys): every
script takes 1 record, 2 request, 3 result, 4 losses, 5 events, 6 metrics;
CREATE and DISCARD also take 7 the owner's job index and 8 the idempotency key
(or ''), CREATE 9 the submission counter. The first five expire with the job;
ARGV[1] is always the retention.
"""

# Refresh the job's retention, and its idempotency key's if it has one; note when it will expire.
_EXPIRE_JOB = """
for i = 1, 5 do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
local clock = redis.call('TIME')
redis.call('HSET', KEYS[1], 'expires_at_ms', clock[1] * 1000 + math.floor(clock[2] / 1000) + ARGV[1] * 1000)
local idempotency = redis.call('HGET', KEYS[1], 'idempotency_key')
if idempotency then redis.call('EXPIRE', idempotency, ARGV[1]) end
"""

# ARGV: ttl, job id, request JSON, request hash, then the record's fields as name, value, ...
# Returns {1, job id} when created, {0, existing job id, its request hash} for a repeated idempotency key.
CREATE = (
    """
if KEYS[8] ~= '' then
  local existing = redis.call('HMGET', KEYS[8], 'job_id', 'hash')
  if existing[1] then return {0, existing[1], existing[2]} end
  redis.call('HSET', KEYS[8], 'job_id', ARGV[2], 'hash', ARGV[4])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
if KEYS[8] ~= '' then redis.call('HSET', KEYS[1], 'idempotency_key', KEYS[8]) end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[7], redis.call('INCR', KEYS[9]), ARGV[2])
redis.call('HINCRBY', KEYS[6], 'submitted:' .. redis.call('HGET', KEYS[1], 'kind'), 1)
"""
    + _EXPIRE_JOB
    + """
return {1, ARGV[2]}
"""
)

# Undo CREATE for a job that could not be queued. ARGV: ttl (unused).
DISCARD = """
local kind = redis.call('HGET', KEYS[1], 'kind')
if not kind then return 0 end
local idempotency = redis.call('HGET', KEYS[1], 'idempotency_key')
if idempotency then redis.call('DEL', idempotency) end
redis.call('ZREM', KEYS[7], redis.call('HGET', KEYS[1], 'id'))
for i = 1, 5 do redis.call('DEL', KEYS[i]) end
redis.call('HINCRBY', KEYS[6], 'submitted:' .. kind, -1)
return 1
"""

# ARGV: ttl, now, max_attempts. Returns {attempt, request, request id} or {0, reason}.
START = (
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

# ARGV: ttl, attempt, epoch, loss. Appends the loss and a progress event only if they are the next epoch's.
# Returns 1 to go on, 0 to stop (cancelled or superseded by a later attempt).
RECORD_EPOCH = """
if redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[2] then return 0 end
if redis.call('LLEN', KEYS[4]) == tonumber(ARGV[3]) - 1 then
  redis.call('RPUSH', KEYS[4], ARGV[4])
  redis.call('XADD', KEYS[5], ARGV[3] .. '-0', 'type', 'progress', 'epoch', ARGV[3], 'loss', ARGV[4])
  redis.call('EXPIRE', KEYS[4], ARGV[1])
  redis.call('EXPIRE', KEYS[5], ARGV[1])
  redis.call('HINCRBY', KEYS[6], 'epochs', 1)
end
if redis.call('HGET', KEYS[1], 'cancel_requested') then return 0 end
return 1
"""

# ARGV: ttl, attempt (or '' for any), now, status, result JSON, error JSON, run seconds, run time bucket.
# A success asked to cancel becomes cancelled. Returns the final status, or false if not this attempt's to finish.
FINISH = (
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
redis.call('XADD', KEYS[5], '*', 'type', 'status', 'status', status)
redis.call('EXPIRE', KEYS[5], ARGV[1])
local kind = record[4]
redis.call('HINCRBY', KEYS[6], 'finished:' .. kind .. ':' .. status, 1)
if ARGV[8] ~= '' then
  redis.call('HINCRBY', KEYS[6], 'run_seconds_bucket:' .. kind .. ':' .. ARGV[8], 1)
  redis.call('HINCRBYFLOAT', KEYS[6], 'run_seconds_sum:' .. kind, ARGV[7])
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
redis.call('XADD', KEYS[5], '*', 'type', 'status', 'status', 'cancelled')
redis.call('HINCRBY', KEYS[6], 'finished:' .. record[2] .. ':cancelled', 1)
"""
    + _EXPIRE_JOB
    + """
return 'cancelled'
"""
)
