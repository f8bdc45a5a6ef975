-- wsbridge: publish one message on a channel, with its history, in one atomic step.
--
-- KEYS[1]  the channel's history stream      wsbridge:{<channel>}:h
-- KEYS[2]  the channel's epoch and offset    wsbridge:{<channel>}:m  (hash: e, o)
-- KEYS[3]  the channel's latest value        wsbridge:{<channel>}:l
-- ARGV[1]  the live channel to PUBLISH on
-- ARGV[2]  the payload (JSON text)
-- ARGV[3]  history size: publications kept (0: no history, no offset)
-- ARGV[4]  seconds the history is kept after this publication
-- ARGV[5]  seconds the epoch, the offset and the latest value are kept
-- ARGV[6]  the epoch to start if the channel has none (random, chosen by the caller)
-- ARGV[7]  "1" to keep the payload as the channel's latest value
-- ARGV[8]  optional: "cluster" on a Redis Cluster (Redis 7.0 or later)
--
-- Returns {epoch, offset}; {"", 0} without history. With history, the live message is
-- the envelope NUL "wsb1" NUL <epoch> NUL <offset> NUL <payload>.
--
-- On a cluster the live message goes out with SPUBLISH (on the shard of the channel,
-- which is the shard of the keys), and the hash also keeps the id of the node that
-- wrote it ('w'). A write on another node (a promoted replica, a new owner after a slot
-- migration) starts a new epoch: replication is asynchronous, so the node may lack
-- publications its predecessor delivered, and must not hand their offsets out again.
local size = tonumber(ARGV[3])
local message = ARGV[2]
local epoch = ''
local offset = 0
local cluster = ARGV[8] == 'cluster'
if size > 0 then
  epoch = redis.call('HGET', KEYS[2], 'e')
  local node = false
  if cluster then
    node = redis.call('CLUSTER', 'MYID')
    if epoch and redis.call('HGET', KEYS[2], 'w') ~= node then
      epoch = false
    end
  end
  if not epoch then
    -- A new epoch: whatever history is left belongs to a lost one.
    epoch = ARGV[6]
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[2], 'e', epoch, 'o', 0)
    if node then
      redis.call('HSET', KEYS[2], 'w', node)
    end
  end
  offset = redis.call('HINCRBY', KEYS[2], 'o', 1)
  redis.call('XADD', KEYS[1], 'MAXLEN', size, '0-' .. offset, 'd', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  message = '\0wsb1\0' .. epoch .. '\0' .. offset .. '\0' .. ARGV[2]
end
if ARGV[7] == '1' then
  redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[5])
end
if cluster then
  redis.call('SPUBLISH', ARGV[1], message)
else
  redis.call('PUBLISH', ARGV[1], message)
end
return {epoch, offset}
