-- sliding_log: exact. A sorted set of admitted requests (score: decision time in
-- microseconds, member: "<unique token>:<cost>") and the running sum of their costs.
-- KEYS[1] log, KEYS[2] sum
-- ARGV[1] limit, ARGV[2] window_ms, ARGV[3] cost (0: only look), ARGV[4] now_us ("" = Redis TIME),
-- ARGV[5] token unique to this request
-- returns {allowed, count, remaining, retry_after_us, reset_us}
local cutoff = now - window
local sum = tonumber(redis.call('GET', KEYS[2]) or '0')
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)
if #expired > 0 then
  for i = 1, #expired do
    sum = sum - tonumber(string.match(expired[i], ':(%d+)$'))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
  if redis.call('ZCARD', KEYS[1]) == 0 then
    sum = 0
    redis.call('DEL', KEYS[1], KEYS[2])
  else
    redis.call('SET', KEYS[2], sum, 'KEEPTTL')
  end
end
if sum < 0 then sum = 0 end
local allowed = 0
if cost > 0 and sum + cost <= limit then
  allowed = 1
  sum = sum + cost
  redis.call('ZADD', KEYS[1], now, ARGV[5] .. ':' .. ARGV[3])
  redis.call('SET', KEYS[2], sum, 'PX', ARGV[2] + 1)
  redis.call('PEXPIRE', KEYS[1], ARGV[2] + 1)
end
local retry = 0
if cost > 0 and allowed == 0 then
  if cost > limit then
    retry = window
  else
    -- walk the oldest entries until enough cost has expired
    local need = sum + cost - limit
    local freed = 0
    local start = 0
    while freed < need do
      local page = redis.call('ZRANGE', KEYS[1], start, start + 99, 'WITHSCORES')
      if #page == 0 then break end
      for i = 1, #page, 2 do
        freed = freed + tonumber(string.match(page[i], ':(%d+)$'))
        if freed >= need then
          retry = tonumber(page[i + 1]) + window - now
          break
        end
      end
      start = start + 100
    end
    if retry <= 0 then retry = 1 end
  end
end
local reset = 0
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #oldest > 0 then
  reset = tonumber(oldest[2]) + window - now
  if reset < 0 then reset = 0 end
end
local remaining = limit - sum
if remaining < 0 then remaining = 0 end
return {allowed, sum, remaining, retry, reset}
