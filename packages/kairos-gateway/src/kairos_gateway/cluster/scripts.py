"""The Lua scripts that change the shared configuration, each one atomic in Redis.

Both work on the ``<prefix>config`` hash (``version``, ``config``, ``digest``, ``node``,
``updated_at``) and publish the new version on the change channel in the same step, so
no node can read a version that was not announced. Both return ``{stored (0|1),
version}``: the version written, or, when nothing was written, the one Redis holds (0
for none).
"""

from __future__ import annotations

__all__ = ["RESTORE", "WRITE"]

_SET = """
redis.call('HSET', KEYS[1], 'version', version, 'config', ARGV[2], 'digest', ARGV[3],
           'node', ARGV[4], 'updated_at', ARGV[5])
redis.call('PUBLISH', ARGV[6], version)
return {1, version}
"""

#: Compare-and-set: write ``ARGV[1] + 1`` when the stored version is ``ARGV[1]``.
#: ARGV: expected version, config JSON, digest, node id, time, channel.
WRITE = (
    """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= tonumber(ARGV[1]) then return {0, current} end
local version = current + 1
"""
    + _SET
)

#: Put back a version Redis lost (restarted without its data): write version
#: ``ARGV[1]`` only when the stored one is older. Same ARGV as `WRITE`.
RESTORE = (
    """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
local version = tonumber(ARGV[1])
if current >= version then return {0, current} end
"""
    + _SET
)
