"""The Lua scripts of cohort.redis: one per operation, one round trip each.

Every script starts with the same prelude. ``KEYS[1]`` is the primitive's meta
hash (its epoch and fencing counter); ``ARGV[1]`` the epoch the caller saw
last (``''`` on first use) and ``ARGV[2]`` a fresh epoch to install on a
primitive that has none. A caller that saw an epoch and finds none, or another
one, gets the error ``COHORT_LOST``: the server lost the state (restart,
failover to a replica that had not caught up, FLUSHALL), and the caller must not
go on as if it still held what it held. Every reply is an array whose first
element is the epoch.

Times come from the server (``TIME``): leases are server deadlines in
milliseconds. Fencing tokens are ``max(last + 1, server time in
microseconds)``, so a counter lost with the server's state starts again above
every token granted before, as long as the server's clock does not step back.

All keys of one primitive share one hash tag (``{ns:kind:name}``): one cluster
slot. Scripts are idempotent per caller (holder or party id), so a call
retried after a lost reply does no harm.
"""

from __future__ import annotations

from typing import Final

PRELUDE: Final = """
local meta = KEYS[1]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  if ARGV[1] ~= '' then
    return redis.error_reply('COHORT_LOST the state of ' .. meta .. ' is gone')
  end
  epoch = ARGV[2]
  redis.call('HSET', meta, 'epoch', epoch)
elseif ARGV[1] ~= '' and ARGV[1] ~= epoch then
  return redis.error_reply('COHORT_LOST ' .. meta .. ' was created again')
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function next_token()
  local last = tonumber(redis.call('HGET', meta, 'fence') or '0')
  local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local token = last + 1
  if now_us > token then token = now_us end
  redis.call('HSET', meta, 'fence', string.format('%.0f', token))
  return token
end
"""

# -- Lock: KEYS[2] owner (the holder id, expiring with the lease) ----------------------
# ARGV[3] holder, ARGV[4] lease ms, ARGV[5] channel

LOCK_ACQUIRE: Final = (
    PRELUDE
    + """
local owner = redis.call('GET', KEYS[2])
if owner == ARGV[3] then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  return {epoch, tonumber(redis.call('HGET', meta, 'token')), tonumber(ARGV[4])}
end
if owner then
  return {epoch, 0, redis.call('PTTL', KEYS[2])}
end
local token = next_token()
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
redis.call('HSET', meta, 'token', string.format('%.0f', token))
return {epoch, token, tonumber(ARGV[4])}
"""
)

LOCK_RENEW: Final = (
    PRELUDE
    + """
if redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  return {epoch, 1}
end
return {epoch, 0}
"""
)

LOCK_RELEASE: Final = (
    PRELUDE
    + """
if redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
  redis.call('PUBLISH', ARGV[5], 'released')
  return {epoch, 1}
end
return {epoch, 0}
"""
)
