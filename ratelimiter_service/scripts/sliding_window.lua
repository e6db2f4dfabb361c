-- sliding_window: the approximate two-counter estimate
--   estimate = previous * (window - elapsed) / window + current
-- KEYS[1] hash {w: current window index, c: current count, p: previous count}
-- ARGV[1..4] and `limit`, `window` (us), `cost`, `now` (us): see check_prelude.lua
-- returns {allowed, count, remaining, retry_after_us, reset_us}
local idx = math.floor(now / window)
local elapsed = now - idx * window
local state = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local w = tonumber(state[1])
local c = tonumber(state[2]) or 0
local p = tonumber(state[3]) or 0
if w == nil then
  c = 0
  p = 0
elseif w == idx - 1 then
  p = c
  c = 0
elseif w < idx then
  p = 0
  c = 0
elseif w > idx then
  -- written by a node whose clock is ahead: keep its window, weigh the previous fully
  idx = w
  elapsed = 0
end
local estimate = p * (window - elapsed) / window + c
local allowed = 0
if cost > 0 and estimate + cost <= limit then
  allowed = 1
  c = c + cost
  estimate = estimate + cost
  redis.call('HSET', KEYS[1], 'w', idx, 'c', c, 'p', p)
  redis.call('PEXPIRE', KEYS[1], 2 * ARGV[2] + 1)
end
local retry = 0
if cost > 0 and allowed == 0 then
  if cost > limit then
    retry = 2 * window
  elseif c + cost > limit then
    -- wait for the next window, then until the previous (now c) has decayed enough
    local after = 0
    if limit - cost < c then after = window * (1 - (limit - cost) / c) end
    retry = (window - elapsed) + after
  else
    retry = window * (1 - (limit - c - cost) / p) - elapsed
  end
  retry = math.ceil(retry)
  if retry < 1 then retry = 1 end
end
local remaining = math.floor(limit - estimate)
if remaining < 0 then remaining = 0 end
return {allowed, math.ceil(estimate), remaining, retry, window - elapsed}
