-- heartbeat: write this node's registry entry and its last-seen time by the Redis clock.
-- KEYS[1] nodes hash (id -> JSON), KEYS[2] last-seen hash (id -> epoch ms)
-- ARGV[1] node id, ARGV[2] JSON entry
-- returns the Redis time in epoch ms
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], now_ms)
return now_ms
