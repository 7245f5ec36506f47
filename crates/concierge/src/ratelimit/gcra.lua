-- GCRA for one key, in one atomic call, on Redis's clock (not the gateways').
-- The arithmetic is the same as ratelimit/gcra.rs.
--
-- KEYS[1]  the bucket
-- ARGV[1]  T, the emission interval, in nanoseconds
-- ARGV[2]  burst x T, in nanoseconds
-- ARGV[3]  the longest wait of delay mode, in nanoseconds (0 when rejecting)
-- ARGV[4]  units wanted: 1, or the batch of hybrid mode
--
-- The value is "<timestamp us> <debt ns>": the debt (TAT - now) as it was
-- at that timestamp. Holding the debt relative to a timestamp keeps every
-- number far below 2^53, so Lua's doubles do exact integer arithmetic in
-- nanoseconds. The key expires when its debt is paid: idle keys vanish.
--
-- Returns {units granted (0 = refused), debt before this call in ns}.

if redis.replicate_commands then
  -- Redis < 5 needs this to write after reading TIME; later versions ignore it.
  redis.replicate_commands()
end

local time = redis.call('TIME')
local now_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
local emission = tonumber(ARGV[1])
local ceiling = tonumber(ARGV[2]) + tonumber(ARGV[3])
local want = tonumber(ARGV[4])

local debt = 0
local stored = redis.call('GET', KEYS[1])
if stored then
  local stamp, owed = string.match(stored, '^(%d+) (%d+)$')
  if stamp then
    debt = (tonumber(stamp) - now_us) * 1000 + tonumber(owed)
    if debt < 0 then
      debt = 0
    end
  end
end

local granted = math.floor((ceiling - debt) / emission)
if granted > want then
  granted = want
end
if granted < 1 then
  return {0, debt}
end

local owed = debt + granted * emission
local ttl_ms = math.ceil(owed / 1000000) + 1
redis.call('SET', KEYS[1], string.format('%d %d', now_us, owed), 'PX', string.format('%d', ttl_ms))
return {granted, debt}
