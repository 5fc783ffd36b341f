"""The Lua scripts that change the shared configuration, each one atomic in Redis.

Both work on the ``<prefix>config`` hash (``version``, ``config``, ``digest``, ``node``,
``updated_at``) and publish the new version on the change channel in the same step, so
no node can read a version that was not announced. Both return ``{stored (0|1),
version}``: the version written, or, when nothing was written, the one Redis holds (0
for none).

In the same step they keep the configuration they write as a version for rollback and,
for a change, append its audit entry (see `store.ConfigStore`), so a change is never
stored without its entry, nor recorded twice however many nodes apply it.

KEYS: config hash, versions hash, versions' order (sorted set), audit list, last audit
id. ARGV: expected (or restored) version, config JSON, digest, node id, time, channel,
then the version's name ("" keeps nothing), the previous version's name (kept as well
when missing: the seed of a cluster that had no versions yet), the audit entry (a JSON
object without ``id``; "" for none), keep_versions, keep_entries.
"""

from __future__ import annotations

__all__ = ["APPEND", "RESTORE", "WRITE"]

_KEEP = """
local previous = redis.call('HGET', KEYS[1], 'config')
if ARGV[7] ~= '' then
  local newest = redis.call('ZREVRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  local at = tonumber(ARGV[5])
  -- Newest by order of writing, whatever the writing node's clock says.
  if newest[2] and tonumber(newest[2]) >= at then at = tonumber(newest[2]) + 0.001 end
  if previous and ARGV[8] ~= '' and redis.call('HEXISTS', KEYS[2], ARGV[8]) == 0 then
    redis.call('HSET', KEYS[2], ARGV[8], previous)
    redis.call('ZADD', KEYS[3], at - 0.0005, ARGV[8])
  end
  redis.call('HSET', KEYS[2], ARGV[7], ARGV[2])
  redis.call('ZADD', KEYS[3], at, ARGV[7])
  local extra = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[10])
  if extra > 0 then
    local old = redis.call('ZRANGE', KEYS[3], 0, extra - 1)
    redis.call('ZREM', KEYS[3], unpack(old))
    redis.call('HDEL', KEYS[2], unpack(old))
  end
end
if ARGV[9] ~= '' then
  local id = redis.call('INCR', KEYS[5])
  redis.call('LPUSH', KEYS[4], '{"id": ' .. id .. ', ' .. string.sub(ARGV[9], 2))
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[11]) - 1)
end
"""

_SET = """
redis.call('HSET', KEYS[1], 'version', version, 'config', ARGV[2], 'digest', ARGV[3],
           'node', ARGV[4], 'updated_at', ARGV[5])
redis.call('PUBLISH', ARGV[6], version)
return {1, version}
"""

#: Compare-and-set: write ``ARGV[1] + 1`` when the stored version is ``ARGV[1]``.
WRITE = (
    """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= tonumber(ARGV[1]) then return {0, current} end
local version = current + 1
"""
    + _KEEP
    + _SET
)

#: Put back a version Redis lost (restarted without its data): write version
#: ``ARGV[1]`` only when the stored one is older. Same KEYS and ARGV as `WRITE`.
RESTORE = (
    """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
local version = tonumber(ARGV[1])
if current >= version then return {0, current} end
"""
    + _KEEP
    + _SET
)

#: An audit entry that changes no configuration (a read of the secrets in clear).
#: KEYS: audit list, last audit id. ARGV: the entry (a JSON object without ``id``),
#: keep_entries. Returns the entry's id.
APPEND = """
local id = redis.call('INCR', KEYS[2])
redis.call('LPUSH', KEYS[1], '{"id": ' .. id .. ', ' .. string.sub(ARGV[1], 2))
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
return id
"""
