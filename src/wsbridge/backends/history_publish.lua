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
--
-- Returns {epoch, offset}; {"", 0} without history. With history, the live message is
-- the envelope NUL "wsb1" NUL <epoch> NUL <offset> NUL <payload>.
local size = tonumber(ARGV[3])
local message = ARGV[2]
local epoch = ''
local offset = 0
if size > 0 then
  epoch = redis.call('HGET', KEYS[2], 'e')
  if not epoch then
    -- A new epoch: whatever history is left belongs to a lost one.
    epoch = ARGV[6]
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[2], 'e', epoch, 'o', 0)
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
redis.call('PUBLISH', ARGV[1], message)
return {epoch, offset}
