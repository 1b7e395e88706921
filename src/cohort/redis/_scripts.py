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
slot. Scripts are idempotent per caller (holder or party id, an EventFlags
wait's id), so a call retried after a lost reply does no harm.
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

# -- Lock: KEYS[2] owner (the holder id, expiring with the lease), KEYS[3] waiting (set,
# for ARGV[6] ms, by an acquire that found the lock held: a release publishes only then)
# ARGV[3] holder, ARGV[4] lease ms, ARGV[5] channel, ARGV[6] waiting ms

LOCK_ACQUIRE: Final = (
    PRELUDE
    + """
local owner = redis.call('GET', KEYS[2])
if owner == ARGV[3] then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  return {epoch, tonumber(redis.call('HGET', meta, 'token')), tonumber(ARGV[4])}
end
if owner then
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[6])
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
  if redis.call('DEL', KEYS[3]) == 1 then
    redis.call('PUBLISH', ARGV[5], 'released')
  end
  return {epoch, 1}
end
return {epoch, 0}
"""
)

# -- Semaphore: KEYS[2] holders (zset holder -> lease expiry, server ms), KEYS[3] waiting
# ARGV[3] holder, ARGV[4] lease ms, ARGV[5] channel, ARGV[6] waiting ms, ARGV[7] permits

SEM_PRELUDE: Final = """
local holders, waiting = KEYS[2], KEYS[3]
local permits = redis.call('HGET', meta, 'permits')
if not permits then
  redis.call('HSET', meta, 'permits', ARGV[7])
elseif permits ~= ARGV[7] then
  return redis.error_reply('COHORT_PERMITS the semaphore ' .. meta .. ' has ' .. permits ..
    ' permits, not ' .. ARGV[7])
end
permits = tonumber(ARGV[7])
-- Grants whose lease lapsed (server time) hold nothing.
local lapsed = redis.call('ZRANGEBYSCORE', holders, '-inf', now_ms)
for _, who in ipairs(lapsed) do
  redis.call('ZREM', holders, who)
  redis.call('HDEL', meta, 'grant:' .. who)
end
"""

_S = PRELUDE + SEM_PRELUDE

SEM_ACQUIRE: Final = (
    _S
    + """
local mine = redis.call('ZSCORE', holders, ARGV[3])
if mine then
  redis.call('ZADD', holders, now_ms + tonumber(ARGV[4]), ARGV[3])
  return {epoch, tonumber(redis.call('HGET', meta, 'grant:' .. ARGV[3])), tonumber(ARGV[4])}
end
if redis.call('ZCARD', holders) >= permits then
  redis.call('SET', waiting, '1', 'PX', ARGV[6])
  local first = redis.call('ZRANGE', holders, 0, 0, 'WITHSCORES')
  return {epoch, 0, tonumber(first[2]) - now_ms}
end
local token = next_token()
redis.call('ZADD', holders, now_ms + tonumber(ARGV[4]), ARGV[3])
redis.call('HSET', meta, 'grant:' .. ARGV[3], string.format('%.0f', token))
return {epoch, token, tonumber(ARGV[4])}
"""
)

SEM_RENEW: Final = (
    _S
    + """
if redis.call('ZSCORE', holders, ARGV[3]) then
  redis.call('ZADD', holders, now_ms + tonumber(ARGV[4]), ARGV[3])
  return {epoch, 1}
end
redis.call('HDEL', meta, 'grant:' .. ARGV[3])
return {epoch, 0}
"""
)

SEM_RELEASE: Final = (
    _S
    + """
redis.call('HDEL', meta, 'grant:' .. ARGV[3])
if redis.call('ZREM', holders, ARGV[3]) == 1 then
  if redis.call('DEL', waiting) == 1 then
    redis.call('PUBLISH', ARGV[5], 'released')
  end
  return {epoch, 1}
end
return {epoch, 0}
"""
)

SEM_COUNT: Final = (
    _S
    + """
return {epoch, redis.call('ZCARD', holders)}
"""
)

# -- Barrier: KEYS[2] state (gen, parties, tripping, 'broken:<gen>' reasons),
# KEYS[3] members (party -> lease expiry, server ms), KEYS[4] arrived (party -> index)
# ARGV[3] party, ARGV[4] lease ms, ARGV[5] parties, ARGV[6] channel, ARGV[7] op arg
# A generation's outcome is published with it, 'passed <gen>' or 'broken <gen> <reason>':
# a waiter woken by it has nothing to read.

BARRIER_PRELUDE: Final = """
local state, members, arrived = KEYS[2], KEYS[3], KEYS[4]
local party, lease_ms, channel = ARGV[3], tonumber(ARGV[4]), ARGV[6]
local parties = redis.call('HGET', state, 'parties')
if not parties then
  redis.call('HSET', state, 'parties', ARGV[5], 'gen', 0)
elseif parties ~= ARGV[5] then
  return redis.error_reply('COHORT_PARTIES the barrier ' .. state .. ' has ' .. parties ..
    ' parties, not ' .. ARGV[5])
end
parties = tonumber(ARGV[5])
local gen = tonumber(redis.call('HGET', state, 'gen'))
local function broken_reason(g)
  return redis.call('HGET', state, 'broken:' .. g)
end
local function break_gen(reason)
  if not broken_reason(gen) then
    redis.call('HSET', state, 'broken:' .. gen, reason)
    redis.call('HDEL', state, 'tripping')
    redis.call('DEL', arrived)
    redis.call('PUBLISH', channel, 'broken ' .. gen .. ' ' .. reason)
  end
end
-- A party whose lease lapsed (server time) breaks the current generation.
local all = redis.call('HGETALL', members)
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) < now_ms then
    redis.call('HDEL', members, all[i])
    break_gen("party " .. all[i] .. "'s lease lapsed (it died, hung or lost its connection)")
  end
end
"""

_B = PRELUDE + BARRIER_PRELUDE

BARRIER_JOIN: Final = (
    _B
    + """
redis.call('HSET', members, party, now_ms + lease_ms)
return {epoch, 'ok'}
"""
)

BARRIER_RENEW: Final = (
    _B
    + """
if redis.call('HEXISTS', members, party) == 0 then return {epoch, 0} end
redis.call('HSET', members, party, now_ms + lease_ms)
return {epoch, 1}
"""
)

# ARGV[7]: '1' if the caller runs an action when it arrives last; ARGV[8]: this arrival's
# id. The same arrival sent again (its reply was lost with the connection, and the client
# retried) is answered as the first was, even once its generation passed.
BARRIER_ARRIVE: Final = (
    _B
    + """
local mine = redis.call('HGET', state, 'arrival:' .. party)
if mine then
  local id, g, i = string.match(mine, '^(%S+) (%d+) (%d+)$')
  if id == ARGV[8] and gen > tonumber(g) then
    return {epoch, 'passed', tonumber(g), tonumber(i), ''}
  end
end
local reason = broken_reason(gen)
if reason then return {epoch, 'broken', gen, -1, reason} end
if redis.call('HEXISTS', members, party) == 0 then
  return {epoch, 'broken', gen, -1, 'party ' .. party .. ' is not joined (its lease lapsed?)'}
end
redis.call('HSET', members, party, now_ms + lease_ms)
local index = redis.call('HGET', arrived, party)
if index then
  if redis.call('HGET', state, 'tripping') == party then
    return {epoch, 'action', gen, tonumber(index), ''}
  end
  return {epoch, 'wait', gen, tonumber(index), ''}
end
index = redis.call('HLEN', arrived)
redis.call('HSET', arrived, party, index)
redis.call('HSET', state, 'arrival:' .. party, ARGV[8] .. ' ' .. gen .. ' ' .. index)
if index + 1 >= parties then
  if ARGV[7] == '1' then
    redis.call('HSET', state, 'tripping', party)
    return {epoch, 'action', gen, index, ''}
  end
  redis.call('DEL', arrived)
  redis.call('HSET', state, 'gen', gen + 1)
  redis.call('PUBLISH', channel, 'passed ' .. gen)
  return {epoch, 'passed', gen, index, ''}
end
return {epoch, 'wait', gen, index, ''}
"""
)

# ARGV[7]: the generation the caller waits in. The reply ends with the server's time (ms).
BARRIER_CHECK: Final = (
    _B
    + """
local g = tonumber(ARGV[7])
if redis.call('HEXISTS', members, party) == 1 then
  redis.call('HSET', members, party, now_ms + lease_ms)
end
local reason = broken_reason(g)
if reason then return {epoch, 'broken', reason, now_ms} end
if gen > g then return {epoch, 'passed', '', now_ms} end
return {epoch, 'wait', '', now_ms}
"""
)

# ARGV[7]: the generation whose action the caller ran.
BARRIER_RELEASE: Final = (
    _B
    + """
local g = tonumber(ARGV[7])
local reason = broken_reason(g)
if reason then return {epoch, 'broken', reason} end
if gen == g and redis.call('HGET', state, 'tripping') == party then
  redis.call('HDEL', state, 'tripping')
  redis.call('DEL', arrived)
  redis.call('HSET', state, 'gen', gen + 1)
  redis.call('PUBLISH', channel, 'passed ' .. gen)
end
return {epoch, 'passed', ''}
"""
)

# ARGV[7]: the reason.
BARRIER_BREAK: Final = (
    _B
    + """
break_gen(ARGV[7])
return {epoch, 'broken', broken_reason(gen)}
"""
)

# A party leaves: it stops being a member (on an error, the caller breaks the barrier first).
BARRIER_LEAVE: Final = (
    _B
    + """
redis.call('HDEL', members, party)
return {epoch, 'ok'}
"""
)

# The statistics: {epoch, gen, arrived, broken reason or '', tripping party or '', members}.
BARRIER_STATS: Final = (
    _B
    + """
return {epoch, gen, redis.call('HLEN', arrived), broken_reason(gen) or '',
  redis.call('HGET', state, 'tripping') or '', redis.call('HLEN', members)}
"""
)

BARRIER_RESET: Final = (
    _B
    + """
if broken_reason(gen) or redis.call('HLEN', arrived) > 0 then
  break_gen('reset() was called')
  redis.call('HSET', state, 'gen', gen + 1)
end
return {epoch, 'ok'}
"""
)

# -- Latch: KEYS[2] state (count, broken), KEYS[3] done (the tokens that counted down),
# KEYS[4] members (joined party -> lease expiry, server ms; dropped once it counted down)
# ARGV[3] party or token, ARGV[4] lease ms, ARGV[5] count, ARGV[6] channel, ARGV[7] op arg

LATCH_PRELUDE: Final = """
local state, done, members = KEYS[2], KEYS[3], KEYS[4]
local count = redis.call('HGET', state, 'count')
if not count then
  redis.call('HSET', state, 'count', ARGV[5])
elseif count ~= ARGV[5] then
  return redis.error_reply('COHORT_COUNT the latch ' .. state .. ' counts ' .. count ..
    ', not ' .. ARGV[5])
end
local remaining = tonumber(ARGV[5]) - redis.call('SCARD', done)
local function break_latch(reason)
  if remaining > 0 and not redis.call('HGET', state, 'broken') then
    redis.call('HSET', state, 'broken', reason)
    redis.call('PUBLISH', ARGV[6], 'broken')
  end
end
-- A joined party whose lease lapsed (server time) before it counted down breaks the latch.
local all = redis.call('HGETALL', members)
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) < now_ms then
    redis.call('HDEL', members, all[i])
    break_latch("party " .. all[i] .. "'s lease lapsed before it counted down " ..
      "(it died, hung or lost its connection)")
  end
end
local broken = redis.call('HGET', state, 'broken')
"""

_L = PRELUDE + LATCH_PRELUDE

LATCH_JOIN: Final = (
    _L
    + """
if redis.call('SISMEMBER', done, ARGV[3]) == 0 then
  redis.call('HSET', members, ARGV[3], now_ms + tonumber(ARGV[4]))
end
return {epoch, 'ok', remaining, broken or ''}
"""
)

LATCH_RENEW: Final = (
    _L
    + """
if redis.call('HEXISTS', members, ARGV[3]) == 1 then
  redis.call('HSET', members, ARGV[3], now_ms + tonumber(ARGV[4]))
  return {epoch, 1}
end
return {epoch, redis.call('SISMEMBER', done, ARGV[3])}
"""
)

LATCH_DOWN: Final = (
    _L
    + """
if redis.call('SISMEMBER', done, ARGV[3]) == 1 then return {epoch, 'ok', remaining, ''} end
if broken then return {epoch, 'broken', remaining, broken} end
if remaining == 0 then return {epoch, 'over', 0, ''} end
redis.call('SADD', done, ARGV[3])
redis.call('HDEL', members, ARGV[3])
remaining = remaining - 1
if remaining == 0 then redis.call('PUBLISH', ARGV[6], 'open') end
return {epoch, 'ok', remaining, ''}
"""
)

LATCH_CHECK: Final = (
    _L
    + """
if remaining > 0 and broken then return {epoch, 'broken', remaining, broken} end
return {epoch, 'ok', remaining, ''}
"""
)

# A joined party leaves; if it did not count down, the latch breaks (ARGV[7]: the reason).
LATCH_LEAVE: Final = (
    _L
    + """
redis.call('HDEL', members, ARGV[3])
if redis.call('SISMEMBER', done, ARGV[3]) == 0 then break_latch(ARGV[7]) end
return {epoch, 'ok', remaining, ''}
"""
)

# -- EventFlags: KEYS[2] the set of set flags; KEYS[3] (consuming ops only) the record of
# one wait's consumption. ARGV[3] channel, ARGV[4] op, ARGV[5] how long the record is kept
# (ms), ARGV[6...] names.
# 'set' / 'clear' change the names; 'all' / 'any' / 'all!' / 'any!' (consume) try to take:
# the reply is {epoch, taken (0/1), every set flag at that moment (before consuming)}.
# A consuming op that takes records its reply in KEYS[3]: the same op sent again (its
# reply was lost with the connection and the call retried) gets that reply, and consumes
# nothing more.

FLAGS_OP: Final = (
    PRELUDE
    + """
local flags, op = KEYS[2], ARGV[4]
local consume = string.sub(op, 4) == '!'
if consume then
  local took = redis.call('GET', KEYS[3])
  if took then return {epoch, 1, cjson.decode(took)} end
end
local names = {}
for i = 6, #ARGV do names[#names + 1] = ARGV[i] end
if op == 'back' then  -- a cancelled consuming wait: what it took (if it took) goes back
  local took = redis.call('GET', KEYS[3])
  if took then
    redis.call('DEL', KEYS[3])
    local was = {}
    for _, n in ipairs(cjson.decode(took)) do was[n] = true end
    local back = {}
    for _, n in ipairs(names) do if was[n] then back[#back + 1] = n end end
    if #back > 0 and redis.call('SADD', flags, unpack(back)) > 0 then
      redis.call('PUBLISH', ARGV[3], 'set')
    end
  end
  return {epoch, 0, {}}
end
if op == 'set' then
  if redis.call('SADD', flags, unpack(names)) > 0 then redis.call('PUBLISH', ARGV[3], 'set') end
  return {epoch, 1, redis.call('SMEMBERS', flags)}
end
if op == 'clear' then
  if redis.call('SREM', flags, unpack(names)) > 0 then redis.call('PUBLISH', ARGV[3], 'clear') end
  return {epoch, 1, redis.call('SMEMBERS', flags)}
end
local found = 0
for _, name in ipairs(names) do found = found + redis.call('SISMEMBER', flags, name) end
local base = string.sub(op, 1, 3)
if (base == 'all' and found == #names) or (base == 'any' and found > 0) then
  local now = redis.call('SMEMBERS', flags)
  if consume then
    redis.call('SREM', flags, unpack(names))
    redis.call('SET', KEYS[3], cjson.encode(now), 'PX', ARGV[5])
    redis.call('PUBLISH', ARGV[3], 'clear')
  end
  return {epoch, 1, now}
end
return {epoch, 0, {}}
"""
)

# -- RWLock: KEYS[2] owner (the writer, expiring with its lease), KEYS[3] waiting (see Lock),
# KEYS[4] readers (zset holder -> lease expiry), KEYS[5] writers waiting (zset holder ->
# mark expiry: while one is marked, no new reader is admitted: writer-preferring)
# ARGV[3] holder, ARGV[4] lease ms, ARGV[5] channel, ARGV[6] waiting ms

RW_PRELUDE: Final = """
local owner, waiting, readers, writers = KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local lapsed = redis.call('ZRANGEBYSCORE', readers, '-inf', now_ms)
for _, who in ipairs(lapsed) do
  redis.call('ZREM', readers, who)
  redis.call('HDEL', meta, 'grant:' .. who)
end
redis.call('ZREMRANGEBYSCORE', writers, '-inf', now_ms)
local function wake()
  if redis.call('DEL', waiting) == 1 then redis.call('PUBLISH', ARGV[5], 'released') end
end
"""

_RW = PRELUDE + RW_PRELUDE

RW_READ_ACQUIRE: Final = (
    _RW
    + """
if redis.call('ZSCORE', readers, ARGV[3]) then
  redis.call('ZADD', readers, now_ms + tonumber(ARGV[4]), ARGV[3])
  return {epoch, tonumber(redis.call('HGET', meta, 'grant:' .. ARGV[3])), tonumber(ARGV[4])}
end
if redis.call('EXISTS', owner) == 1 or redis.call('ZCARD', writers) > 0 then
  redis.call('SET', waiting, '1', 'PX', ARGV[6])
  return {epoch, 0, redis.call('PTTL', owner)}
end
local token = next_token()
redis.call('ZADD', readers, now_ms + tonumber(ARGV[4]), ARGV[3])
redis.call('HSET', meta, 'grant:' .. ARGV[3], string.format('%.0f', token))
return {epoch, token, tonumber(ARGV[4])}
"""
)

RW_READ_RENEW: Final = (
    _RW
    + """
if redis.call('ZSCORE', readers, ARGV[3]) then
  redis.call('ZADD', readers, now_ms + tonumber(ARGV[4]), ARGV[3])
  return {epoch, 1}
end
redis.call('HDEL', meta, 'grant:' .. ARGV[3])
return {epoch, 0}
"""
)

RW_READ_RELEASE: Final = (
    _RW
    + """
redis.call('HDEL', meta, 'grant:' .. ARGV[3])
if redis.call('ZREM', readers, ARGV[3]) == 1 then
  wake()
  return {epoch, 1}
end
return {epoch, 0}
"""
)

RW_WRITE_ACQUIRE: Final = (
    _RW
    + """
local o = redis.call('GET', owner)
if o == ARGV[3] then
  redis.call('PEXPIRE', owner, ARGV[4])
  return {epoch, tonumber(redis.call('HGET', meta, 'token')), tonumber(ARGV[4])}
end
if o or redis.call('ZCARD', readers) > 0 then
  redis.call('ZADD', writers, now_ms + tonumber(ARGV[6]), ARGV[3])
  redis.call('SET', waiting, '1', 'PX', ARGV[6])
  local pttl = redis.call('PTTL', owner)
  if pttl < 0 then
    local first = redis.call('ZRANGE', readers, 0, 0, 'WITHSCORES')
    if first[2] then pttl = tonumber(first[2]) - now_ms end
  end
  return {epoch, 0, pttl}
end
redis.call('ZREM', writers, ARGV[3])
local token = next_token()
redis.call('SET', owner, ARGV[3], 'PX', ARGV[4])
redis.call('HSET', meta, 'token', string.format('%.0f', token))
return {epoch, token, tonumber(ARGV[4])}
"""
)

RW_WRITE_RENEW: Final = (
    _RW
    + """
if redis.call('GET', owner) == ARGV[3] then
  redis.call('PEXPIRE', owner, ARGV[4])
  return {epoch, 1}
end
return {epoch, 0}
"""
)

# Also what a writer cancelled while it waited runs: its mark goes, and the readers it held
# off are woken.
RW_WRITE_RELEASE: Final = (
    _RW
    + """
local unmarked = redis.call('ZREM', writers, ARGV[3])
if redis.call('GET', owner) == ARGV[3] then
  redis.call('DEL', owner)
  wake()
  return {epoch, 1}
end
if unmarked == 1 then redis.call('PUBLISH', ARGV[5], 'unmarked') end
return {epoch, 0}
"""
)

# -- Group: KEYS[2] state (parties, coordinator lease expiry, decided, reason), KEYS[3] members
# (joined, not reported: name -> lease expiry), KEYS[4] reports (name -> JSON), KEYS[5] order
# (names in report order). ARGV[3] channel, ARGV[4] lease ms, ARGV[5...] per operation.
# Until the group is decided, every script first counts the members whose lease lapsed as
# failed, and decides 'fail' if the coordinating process's lease lapsed.

GROUP_PRELUDE: Final = """
local state, members, reports, order = KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local decided = redis.call('HGET', state, 'decided')
if not decided then
  local all = redis.call('HGETALL', members)
  for i = 1, #all, 2 do
    if tonumber(all[i + 1]) < now_ms then
      redis.call('HDEL', members, all[i])
      redis.call('HSET', reports, all[i], cjson.encode({kind = 'lapsed',
        message = "member " .. all[i] .. "'s lease lapsed before it reported " ..
          "(it died, hung or lost its connection)"}))
      redis.call('RPUSH', order, all[i])
      redis.call('PUBLISH', ARGV[3], 'report')
    end
  end
  local until_ms = redis.call('HGET', state, 'coordinator')
  if until_ms and tonumber(until_ms) < now_ms then
    decided = 'fail'
    redis.call('HSET', state, 'decided', decided, 'reason',
      "the coordinating process's lease lapsed (it died, hung or lost its connection)")
    redis.call('PUBLISH', ARGV[3], 'decided')
  end
end
local reason = redis.call('HGET', state, 'reason') or ''
"""

_G = PRELUDE + GROUP_PRELUDE

# The coordinator opens the group (ARGV[5] parties): a group name is used once.
GROUP_OPEN: Final = (
    _G
    + """
if redis.call('HEXISTS', state, 'parties') == 1 then
  return redis.error_reply('COHORT_USED the group ' .. state .. ' was opened before')
end
redis.call('HSET', state, 'parties', ARGV[5], 'coordinator', now_ms + tonumber(ARGV[4]))
return {epoch, 1}
"""
)

# The coordinator's poll (ARGV[5]: reports it read so far): renews its lease, returns
# {epoch, decided, reason, names reported since, their reports}.
GROUP_POLL: Final = (
    _G
    + """
if not decided then
  redis.call('HSET', state, 'coordinator', now_ms + tonumber(ARGV[4]))
end
local names = redis.call('LRANGE', order, tonumber(ARGV[5]), -1)
local found = {}
if #names > 0 then found = redis.call('HMGET', reports, unpack(names)) end
return {epoch, decided or '', reason, names, found}
"""
)

# The coordinator decides (ARGV[5] reports read, ARGV[6] 'done'/'fail', ARGV[7] reason),
# only if no report came since it read them: {epoch, 1} decided; {epoch, 0} read again.
GROUP_DECIDE: Final = (
    _G
    + """
if decided then return {epoch, 0} end
if redis.call('LLEN', order) > tonumber(ARGV[5]) then return {epoch, 0} end
redis.call('HSET', state, 'decided', ARGV[6], 'reason', ARGV[7])
redis.call('PUBLISH', ARGV[3], 'decided')
return {epoch, 1}
"""
)

# A member joins (ARGV[5] its name): {epoch, 'ok' or 'decided', reason}.
MEMBER_JOIN: Final = (
    _G
    + """
if decided then return {epoch, 'decided', reason} end
if redis.call('HEXISTS', members, ARGV[5]) == 1 or redis.call('HEXISTS', reports, ARGV[5]) == 1 then
  return redis.error_reply('COHORT_NAME a member named ' .. ARGV[5] .. ' joined ' .. state ..
    ' already')
end
local parties = redis.call('HGET', state, 'parties')
if parties and redis.call('HLEN', members) + redis.call('LLEN', order) >= tonumber(parties) then
  return redis.error_reply('COHORT_FULL all ' .. parties .. ' members of ' .. state ..
    ' joined already')
end
redis.call('HSET', members, ARGV[5], now_ms + tonumber(ARGV[4]))
return {epoch, 'ok', ''}
"""
)

MEMBER_RENEW: Final = (
    _G
    + """
if redis.call('HEXISTS', members, ARGV[5]) == 1 then
  redis.call('HSET', members, ARGV[5], now_ms + tonumber(ARGV[4]))
  return {epoch, 1}
end
return {epoch, 0}
"""
)

# A member reports (ARGV[5] name, ARGV[6] its report as JSON): {epoch, status, reason} with
# status 'ok' (counted; again for a retry), 'decided' (too late) or 'lapsed' (counted failed).
MEMBER_REPORT: Final = (
    _G
    + """
if redis.call('HEXISTS', members, ARGV[5]) == 0 then
  if redis.call('HEXISTS', reports, ARGV[5]) == 1 then
    local mine = cjson.decode(redis.call('HGET', reports, ARGV[5]))
    if mine.kind == 'lapsed' then return {epoch, 'lapsed', mine.message} end
    return {epoch, 'ok', ''}
  end
  if decided then return {epoch, 'decided', reason} end
  return {epoch, 'lapsed', 'the member never joined or its lease lapsed'}
end
if decided then return {epoch, 'decided', reason} end
redis.call('HDEL', members, ARGV[5])
redis.call('HSET', reports, ARGV[5], ARGV[6])
redis.call('RPUSH', order, ARGV[5])
redis.call('PUBLISH', ARGV[3], 'report')
return {epoch, 'ok', ''}
"""
)

GROUP_STATUS: Final = (
    _G
    + """
return {epoch, decided or '', reason}
"""
)
