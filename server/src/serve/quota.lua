-- breachcheck quota charge: one atomic script per call (server/src/serve/redis.rs).
--
-- KEYS[1]  the API key's hash, "<prefix>{<key name>}" (one key, one slot:
--          Redis Cluster safe).
-- ARGV[1]  "request", "elements" or "bytes"; then, by operation:
--   request:  request_interval_us, request_burst, is_evaluate (0|1),
--             element_interval_us, element_burst, elements_per_day
--   elements: n, element_interval_us, element_burst, elements_per_day
--   bytes:    n, bucket_bytes_per_day
--   pir:      n, pir_answers_per_day
--
-- Returns {code, retry_after_ms}: code 0 charged; 1 request rate; 2 daily
-- evaluation cap; 3 evaluation rate (burst); 4 daily bucket download cap;
-- 5 a batch larger than the burst (never fits: nothing charged); 6 daily
-- PIR answer cap.
--
-- Rates are GCRA (a token bucket stated as a "theoretical arrival time",
-- TAT): a charge of n at interval T is allowed when
-- max(TAT, now) + n*T - burst*T <= now. Time is the Redis server's own
-- (TIME), in integer microseconds since 2026-01-01 (an epoch offset keeps
-- times of realistic rates far below 2^53, where Lua's doubles stop being
-- exact), and is stored with "%.0f" after math.ceil, never with tostring
-- (which would write 1.7e+15). Rounding up costs a caller at most 1 us a
-- charge, so a rate above 10^6 a second (an interval below that
-- resolution) acts as about 10^6 a second.
--
-- The hash: rt, et = request and element TATs; day = UTC day number of the
-- counters e (elements), b (bucket bytes) and p (PIR answers). Its TTL runs to the later of
-- the next UTC midnight and the TATs, so an idle key vanishes.

local EPOCH = 1767225600 -- 2026-01-01T00:00:00Z
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = (sec - EPOCH) * 1000000 + tonumber(t[2])
local day = math.floor(sec / 86400)
local to_midnight_us = ((day + 1) * 86400 - sec) * 1000000 - tonumber(t[2])

-- Every argument is read and checked before anything is written: Redis
-- does not roll back a script that fails half-way.
local op = ARGV[1]
local arity = ({request = 7, elements = 5, bytes = 3, pir = 3})[op]
if not arity or #ARGV ~= arity then
  return redis.error_reply('breachcheck quota: bad operation or arity')
end
local a = {}
for i = 2, arity do
  a[i] = tonumber(ARGV[i])
  if not a[i] or a[i] < 0 or a[i] ~= a[i] then
    return redis.error_reply('breachcheck quota: bad argument ' .. i)
  end
end

local h = redis.call('HMGET', KEYS[1], 'rt', 'et', 'day', 'e', 'b', 'p')
-- A key never charged is full: its TATs are now (not the epoch, which a
-- clock before 2026 would put in the future).
local rt = tonumber(h[1]) or now
local et = tonumber(h[2]) or now
local e = tonumber(h[4]) or 0
local b = tonumber(h[5]) or 0
local p = tonumber(h[6]) or 0
local stored_day = tonumber(h[3])
if stored_day and stored_day > day then
  -- The clock stepped back across midnight (an NTP step, a failover to a
  -- lagging replica): keep the later day and its counters, never reset twice.
  day = stored_day
elseif stored_day ~= day then
  e = 0
  b = 0
  p = 0
end

local function ms(us)
  return math.ceil(us / 1000)
end

-- The TAT after charging n at interval T, or nil and the wait in us.
local function gcra(tat, n, interval, burst)
  local new = math.max(tat, now) + n * interval
  local allow_at = new - burst * interval
  if allow_at > now then
    return nil, allow_at - now
  end
  return math.ceil(new), 0
end

local function save()
  redis.call('HSET', KEYS[1],
    'rt', string.format('%.0f', rt), 'et', string.format('%.0f', et),
    'day', string.format('%.0f', day),
    'e', string.format('%.0f', e), 'b', string.format('%.0f', b),
    'p', string.format('%.0f', p))
  -- At most 400 days: PEXPIRE refuses what overflows its milliseconds.
  local ttl = math.min(math.max(to_midnight_us, rt - now, et - now), 400 * 86400 * 1000000)
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', ms(ttl) + 1000))
end

if op == 'request' then
  local ri, rb = a[2], a[3]
  local is_eval = a[4] == 1
  local ei, eb, per_day = a[5], a[6], a[7]
  local new, wait = gcra(rt, 1, ri, rb)
  if not new then
    return {1, ms(wait)}
  end
  rt = new
  save()
  if is_eval then
    if e >= per_day then
      return {2, ms(to_midnight_us)}
    end
    local ok, ewait = gcra(et, 1, ei, eb)
    if not ok then
      return {3, ms(ewait)}
    end
  end
  return {0, 0}
elseif op == 'elements' then
  local n, ei, eb, per_day = a[2], a[3], a[4], a[5]
  if n > eb then
    return {5, ms(to_midnight_us)}
  end
  if e + n > per_day then
    return {2, ms(to_midnight_us)}
  end
  local new, wait = gcra(et, n, ei, eb)
  if not new then
    return {3, ms(wait)}
  end
  et = new
  e = e + n
  save()
  return {0, 0}
elseif op == 'bytes' then
  local n, cap = a[2], a[3]
  if b + n > cap then
    return {4, ms(to_midnight_us)}
  end
  b = b + n
  save()
  return {0, 0}
elseif op == 'pir' then
  local n, cap = a[2], a[3]
  if p + n > cap then
    return {6, ms(to_midnight_us)}
  end
  p = p + n
  save()
  return {0, 0}
end
return redis.error_reply('breachcheck quota: unreachable')
