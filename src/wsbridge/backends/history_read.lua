-- wsbridge: read a channel's position and the publications after an offset, atomically.
--
-- KEYS[1]  the channel's history stream      wsbridge:{<channel>}:h
-- KEYS[2]  the channel's epoch and offset    wsbridge:{<channel>}:m
-- ARGV[1]  the first stream ID to return: "0-<offset + 1>"
-- ARGV[2]  at most this many publications (0: the position only)
-- ARGV[3]  the epoch to start if the channel has none
-- ARGV[4]  seconds a new epoch is kept
-- ARGV[5]  optional: "cluster" on a Redis Cluster: an epoch another node wrote is ended
--          here too (see history_publish.lua)
--
-- Returns {epoch, top offset, XRANGE entries}.
local epoch = redis.call('HGET', KEYS[2], 'e')
local node = false
if ARGV[5] == 'cluster' then
  node = redis.call('CLUSTER', 'MYID')
  if epoch and redis.call('HGET', KEYS[2], 'w') ~= node then
    epoch = false
  end
end
if not epoch then
  epoch = ARGV[3]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', epoch, 'o', 0)
  if node then
    redis.call('HSET', KEYS[2], 'w', node)
  end
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
local top = redis.call('HGET', KEYS[2], 'o') or '0'
local entries = {}
if tonumber(ARGV[2]) > 0 then
  entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
end
return {epoch, top, entries}
