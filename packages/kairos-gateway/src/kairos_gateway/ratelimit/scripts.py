"""The Lua twins of `kairos_core.limits`: one atomic script per algorithm.

Each script is the same arithmetic in the same order as its Python function, so on
the same arrival times both give bit-identical decisions (a test holds them to it).
``now`` is the last argument; an empty string means Redis's own clock (``TIME``), so
every gateway sharing the Redis shares one clock. Floats cross the boundary as
``%.17g`` strings (Lua numbers returned to Redis would be truncated to integers).
State is a hash whose TTL is the time until the quota fully resets, after which an
absent key means the same thing. Every script returns
``{allowed (0|1), remaining, reset_after_s, retry_after_s}``.

`LEASE_SCRIPTS` are the twins of `kairos_core.limits.lease_*` (``sync: "batched"``):
they take up to ``want`` requests at once, after giving back unused ones, and return
``{granted, remaining, reset_after_s, retry_after_s, window}``.
"""

from __future__ import annotations

__all__ = ["LEASE_SCRIPTS", "SCRIPTS"]

_PRELUDE = """
local now = tonumber(ARGV[#ARGV])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function f(x) return string.format('%.17g', x) end
local function int(x) return string.format('%d', x) end
local function expire(seconds)
  redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(seconds * 1000)))
end
"""

#: The current window's index and count (ARGV: limit, window); shared by the exact
#: check and the lease.
_WINDOW_STATE = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local index = math.floor(now / window)
local count = 0
local state = redis.call('HMGET', KEYS[1], 'i', 'c')
local stored = tonumber(state[1])
if stored and stored >= index then
  index = stored
  count = tonumber(state[2]) or 0
end
"""

FIXED_WINDOW = (
    _PRELUDE
    + _WINDOW_STATE
    + """
local reset = (index + 1) * window - now
if count < limit then
  count = count + 1
  redis.call('HSET', KEYS[1], 'i', int(index), 'c', int(count))
  expire(reset)
  return {1, limit - count, f(reset), '0'}
end
return {0, 0, f(reset), f(reset)}
"""
)

SLIDING_WINDOW = (
    _PRELUDE
    + """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local k = tonumber(ARGV[3])
local size = window / k
local index = math.floor(now / size)
local raw = redis.call('HGETALL', KEYS[1])
local buckets = {}
for i = 1, #raw, 2 do
  buckets[#buckets + 1] = {tonumber(raw[i]), tonumber(raw[i + 1])}
end
table.sort(buckets, function(a, b) return a[1] < b[1] end)
if #buckets > 0 and buckets[#buckets][1] > index then
  index = buckets[#buckets][1]
end
local live = {}
local total = 0
for _, b in ipairs(buckets) do
  if b[1] >= index - k then
    live[#live + 1] = b
    total = total + b[2]
  else
    redis.call('HDEL', KEYS[1], int(b[1]))
  end
end
if total < limit then
  redis.call('HINCRBY', KEYS[1], int(index), 1)
  total = total + 1
  local reset = (index + k + 1) * size - now
  expire(reset)
  return {1, limit - total, f(reset), '0'}
end
local reset = (live[#live][1] + k + 1) * size - now
local retry = reset
local running = total
for _, b in ipairs(live) do
  running = running - b[2]
  if running < limit then
    retry = (b[1] + k + 1) * size - now
    break
  end
end
return {0, 0, f(reset), f(retry)}
"""
)

#: The bucket's state refilled up to now (ARGV: limit, window, capacity); shared by
#: the exact check and the lease.
_BUCKET_REFILL = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local capacity = tonumber(ARGV[3])
local rate = limit / window
local state = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = capacity
  updated = now
elseif now > updated then
  tokens = math.min(capacity, tokens + (now - updated) * rate)
  updated = now
end
"""

TOKEN_BUCKET = (
    _PRELUDE
    + _BUCKET_REFILL
    + """
local allowed = 0
local remaining = 0
local retry = 0
if tokens >= 1 - 1e-9 then
  tokens = math.max(0, tokens - 1)
  allowed = 1
  remaining = math.floor(tokens)
else
  retry = (1 - tokens) / rate
end
local reset = (capacity - tokens) / rate
redis.call('HSET', KEYS[1], 't', f(tokens), 'u', f(updated))
expire(reset)
return {allowed, remaining, f(reset), f(retry)}
"""
)

SCRIPTS = {
    "fixed_window": FIXED_WINDOW,
    "sliding_window": SLIDING_WINDOW,
    "token_bucket": TOKEN_BUCKET,
}

LEASE_FIXED_WINDOW = (
    _PRELUDE
    + _WINDOW_STATE
    + """
local want = tonumber(ARGV[3])
local give_back = tonumber(ARGV[4])
local lease_window = tonumber(ARGV[5])
if give_back > 0 and lease_window == index then
  count = math.max(0, count - give_back)
end
local reset = (index + 1) * window - now
if count < limit then
  local granted = math.min(want, limit - count)
  count = count + granted
  redis.call('HSET', KEYS[1], 'i', int(index), 'c', int(count))
  expire(reset)
  return {granted, limit - count, f(reset), '0', int(index)}
end
return {0, 0, f(reset), f(reset), int(index)}
"""
)

LEASE_TOKEN_BUCKET = (
    _PRELUDE
    + _BUCKET_REFILL
    + """
local want = tonumber(ARGV[4])
local give_back = tonumber(ARGV[5])
if give_back > 0 then
  tokens = math.min(capacity, tokens + give_back)
end
local granted = 0
local remaining = 0
local retry = 0
if tokens >= 1 - 1e-9 then
  granted = math.min(want, math.floor(tokens + 1e-9))
  tokens = math.max(0, tokens - granted)
  remaining = math.floor(tokens)
else
  retry = (1 - tokens) / rate
end
local reset = (capacity - tokens) / rate
redis.call('HSET', KEYS[1], 't', f(tokens), 'u', f(updated))
expire(reset)
return {granted, remaining, f(reset), f(retry), '0'}
"""
)

LEASE_SCRIPTS = {
    "fixed_window": LEASE_FIXED_WINDOW,
    "token_bucket": LEASE_TOKEN_BUCKET,
}
