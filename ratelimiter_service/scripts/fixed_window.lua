-- fixed_window: one counter per window. Admits up to 2x the limit across a window edge
-- (the end of one window and the start of the next).
-- KEYS[1] hash {w: window index, c: count}
-- ARGV[1..4] and `limit`, `window` (us), `cost`, `now` (us): see check_prelude.lua
-- returns {allowed, count, remaining, retry_after_us, reset_us}
local idx = math.floor(now / window)
local elapsed = now - idx * window
local state = redis.call('HMGET', KEYS[1], 'w', 'c')
local w = tonumber(state[1])
local c = tonumber(state[2]) or 0
if w == nil or w < idx then
  c = 0
elseif w > idx then
  -- written by a node whose clock is ahead: keep counting in its window
  idx = w
  elapsed = 0
end
local allowed = 0
if cost > 0 and c + cost <= limit then
  allowed = 1
  c = c + cost
  redis.call('HSET', KEYS[1], 'w', idx, 'c', c)
  redis.call('PEXPIRE', KEYS[1], 2 * ARGV[2] + 1)
end
local retry = 0
if cost > 0 and allowed == 0 then
  retry = window - elapsed
  if cost > limit then retry = window end
end
local remaining = limit - c
if remaining < 0 then remaining = 0 end
return {allowed, c, remaining, retry, window - elapsed}
