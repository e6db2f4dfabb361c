-- gcra: the generic cell rate algorithm (a token bucket of `limit` tokens refilled at
-- limit / window). State: the theoretical arrival time (TAT) in microseconds.
-- A request of cost n conforms when TAT + n * interval - window <= now (+1 us for rounding).
-- KEYS[1] tat
-- ARGV[1..4] and `limit`, `window` (us), `cost`, `now` (us): see check_prelude.lua
-- returns {allowed, count, remaining, retry_after_us, reset_us}
local interval = window / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allowed = 0
local retry = 0
if cost > 0 then
  local new_tat = tat + cost * interval
  local wait = new_tat - window - now
  if wait <= 1 then
    allowed = 1
    tat = new_tat
    redis.call('SET', KEYS[1], tat, 'PX', math.ceil((tat - now) / 1000) + 1)
  else
    retry = math.ceil(wait)
  end
end
local used = tat - now
local remaining = math.floor((window - used + 1) / interval)
if remaining < 0 then remaining = 0 end
if remaining > limit then remaining = limit end
return {allowed, limit - remaining, remaining, retry, math.ceil(used)}
