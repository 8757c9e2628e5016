// The Lua scripts of the Redis store. Each runs atomically on the server, with
// the server's clock (TIME), so replicas whose clocks differ still share one
// time line. They do the same arithmetic as memory.ts: numbers travel as
// strings of 17 significant digits, which round-trip doubles exactly.
//
// Layout, shared by both scripts: ARGV[1..3] are the numbers of buckets, spends
// and windows; KEYS hold their keys in that order; the per-item arguments
// follow in the same order.

const PRELUDE = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local nb, ns, nw = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function str(x) return string.format('%.17g', x) end
local function tokens_at(key, rps, burst)
  local state = redis.call('HMGET', key, 'tokens', 'at')
  if not state[1] then return burst, false end
  return math.min(burst, tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * rps / 1000), true
end
local out = {str(now)}
`;

/**
 * Per bucket: rps, burst, ttl ms. Per spend: cost micros (-1: unreadable), cap
 * micros, then start and end of three candidate days. Per window: ms, member.
 * Returns now, then per bucket tokens before and 1/0 taken, per spend micros
 * before, 1/0 reserved and the day's start and end, per window calls before.
 */
export const RESERVE_SCRIPT = `${PRELUDE}
local a = 4
local spend_args = 4 + nb * 3
local days = {}
for i = 1, ns do
  local base = spend_args + (i - 1) * 8
  for d = 0, 2 do
    local s, e = tonumber(ARGV[base + 2 + d * 2]), tonumber(ARGV[base + 3 + d * 2])
    if now >= s and now < e then days[i] = {s, e} end
  end
  if not days[i] then
    return redis.error_reply('PORTCULLIS_CLOCK the Redis clock is more than a day from the sidecar clock')
  end
end
local k = 1
for i = 1, nb do
  local rps, burst, ttl = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2]
  a = a + 3
  local key = KEYS[k]
  k = k + 1
  local tokens = tokens_at(key, rps, burst)
  local before, taken = tokens, 0
  if tokens >= 1 then tokens, taken = tokens - 1, 1 end
  redis.call('HSET', key, 'tokens', str(tokens), 'at', str(now))
  redis.call('PEXPIRE', key, ttl)
  out[#out + 1] = str(before)
  out[#out + 1] = tostring(taken)
end
for i = 1, ns do
  local cost, cap = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 8
  local key = KEYS[k]
  k = k + 1
  local day_start, day_end = days[i][1], days[i][2]
  local state = redis.call('HMGET', key, 'day', 'micros')
  local before = 0
  if state[1] and tonumber(state[1]) == day_start then before = tonumber(state[2]) end
  local reserved = 0
  if cost >= 0 and before + cost <= cap then reserved = 1 end
  redis.call('HSET', key, 'day', str(day_start), 'micros', str(before + reserved * cost))
  redis.call('PEXPIREAT', key, day_end + 3600000)
  out[#out + 1] = str(before)
  out[#out + 1] = tostring(reserved)
  out[#out + 1] = str(day_start)
  out[#out + 1] = str(day_end)
end
for i = 1, nw do
  local ms, member = tonumber(ARGV[a]), ARGV[a + 1]
  a = a + 2
  local key = KEYS[k]
  k = k + 1
  redis.call('ZREMRANGEBYSCORE', key, '-inf', str(now - ms))
  out[#out + 1] = tostring(redis.call('ZCARD', key))
  redis.call('ZADD', key, str(now), member)
  redis.call('PEXPIRE', key, math.ceil(ms) + 1000)
end
return out
`;

/**
 * Per bucket: rps, burst, ttl ms, 1/0 refund a token. Per spend: delta micros
 * and the day's start and end. Per window: ms, member, 1/0 remove it, max
 * (-1: none). Returns now, then per window the ms until it holds fewer than
 * max calls (-1 when no max was given).
 */
export const SETTLE_SCRIPT = `${PRELUDE}
local a, k = 4, 1
for i = 1, nb do
  local rps, burst, ttl, refund = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3]
  a = a + 4
  local key = KEYS[k]
  k = k + 1
  if refund == '1' then
    local tokens, known = tokens_at(key, rps, burst)
    if known then
      redis.call('HSET', key, 'tokens', str(math.min(burst, tokens + 1)), 'at', str(now))
      redis.call('PEXPIRE', key, ttl)
    end
  end
end
for i = 1, ns do
  local delta, day_start, day_end = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local key = KEYS[k]
  k = k + 1
  local state = redis.call('HMGET', key, 'day', 'micros')
  if delta ~= 0 then
    if state[1] and tonumber(state[1]) == day_start then
      redis.call('HSET', key, 'micros', str(math.max(0, tonumber(state[2]) + delta)))
    elseif not state[1] and delta > 0 and now < day_end then
      redis.call('HSET', key, 'day', str(day_start), 'micros', str(delta))
      redis.call('PEXPIREAT', key, day_end + 3600000)
    end
  end
end
for i = 1, nw do
  local ms, member, remove, max = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  a = a + 4
  local key = KEYS[k]
  k = k + 1
  if remove == '1' then redis.call('ZREM', key, member) end
  local wait = -1
  if max >= 0 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', str(now - ms))
    local count = redis.call('ZCARD', key)
    wait = 0
    if max > 0 and count >= max then
      local oldest = redis.call('ZRANGE', key, count - max, count - max, 'WITHSCORES')
      wait = math.max(0, tonumber(oldest[2]) + ms - now)
    end
  end
  out[#out + 1] = str(wait)
end
return out
`;
