-- Prepended to every check script (see _scripts.py): the arguments every algorithm
-- takes, and the one clock it decides by.
-- ARGV[1] limit, ARGV[2] window_ms, ARGV[3] cost (0: only look), ARGV[4] now_us ("" = Redis TIME)
-- The clock: Redis TIME (one clock for every node), or the node's own clock passed in.
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2]) * 1000
local cost = tonumber(ARGV[3])
local now
if ARGV[4] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[4])
end
