"""The Lua scripts gateway.shared runs in Redis (EVALSHA): atomic, and timed by Redis ``TIME``
so replicas with skewed clocks agree.  Each script's KEYS and ARGV are named above it."""

from __future__ import annotations

NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

#: heartbeat + read of what everyone must honour; KEYS: instances, holds, breakers, salt
BEAT = (
    NOW
    + """
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
local n = redis.call('ZCARD', KEYS[1])
redis.call('SET', KEYS[4], ARGV[3], 'NX')
local salt = redis.call('GET', KEYS[4])
local out = {now, n, salt}
for k = 2, 3 do
  local all = redis.call('HGETALL', KEYS[k])
  local live = {}
  for i = 1, #all, 2 do
    if tonumber(all[i + 1]) > now then
      live[#live + 1] = all[i]
      live[#live + 1] = all[i + 1]
    else
      redis.call('HDEL', KEYS[k], all[i])
    end
  end
  out[#out + 1] = live
end
return out
"""
)

#: a sliding-window slot: KEYS[1] the send log; ARGV: longest window ms, max wait ms, member,
#: earliest start (ms from now), the number of seeds, the seeds (sends made while Redis was
#: down, ms from now), then (count, window ms) pairs. -> {taken, wait ms, slots used per window}
RESERVE = (
    NOW
    + """
local key = KEYS[1]
local longest = tonumber(ARGV[1])
local seeds = tonumber(ARGV[5])
for i = 1, seeds do redis.call('ZADD', key, now + tonumber(ARGV[5 + i]), ARGV[3] .. ':s' .. i) end
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - longest)
local n = redis.call('ZCARD', key)
local at = now + tonumber(ARGV[4])
if n > 0 then
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  at = math.max(at, tonumber(last[2]))
end
for i = 6 + seeds, #ARGV, 2 do
  local count = tonumber(ARGV[i])
  if n >= count then
    local e = redis.call('ZRANGE', key, n - count, n - count, 'WITHSCORES')
    at = math.max(at, tonumber(e[2]) + tonumber(ARGV[i + 1]))
  end
end
local out = {0, at - now}
if at - now <= tonumber(ARGV[2]) then
  redis.call('ZADD', key, at, ARGV[3])
  redis.call('PEXPIRE', key, longest + (at - now) + 1000)
  out[1] = 1
end
for i = 6 + seeds, #ARGV, 2 do
  out[#out + 1] = redis.call('ZCOUNT', key, '(' .. (now - tonumber(ARGV[i + 1])), '+inf')
end
return out
"""
)

#: read only: the slots of each window; KEYS: send logs, ARGV per key: the number of windows, their ms
COUNT = (
    NOW
    + """
local out = {}
local j = 1
for k = 1, #KEYS do
  local n = tonumber(ARGV[j])
  for i = 1, n do
    out[#out + 1] = redis.call('ZCOUNT', KEYS[k], '(' .. (now - tonumber(ARGV[j + i])), '+inf')
  end
  j = j + n + 1
end
return out
"""
)

#: a client token bucket: KEYS[1]; ARGV: tokens per ms, burst -> 0 or ms until a token
TAKE = (
    NOW
    + """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(v[1]) or burst
local stamp = tonumber(v[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
return wait
"""
)

#: hold everyone off: KEYS[1] the hash, ARGV: field, ms -> the until (server ms) now in force
HOLD = (
    NOW
    + """
local untl = now + tonumber(ARGV[2])
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1])) or 0
if untl > cur then redis.call('HSET', KEYS[1], ARGV[1], untl) else untl = cur end
return {now, untl}
"""
)

#: every script by the name ``SharedState._call`` uses
SCRIPTS = {"beat": BEAT, "reserve": RESERVE, "take": TAKE, "hold": HOLD, "count": COUNT}
