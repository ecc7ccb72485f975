package celerycompat

import "github.com/gomodule/redigo/redis"

// Lua scripts. Each runs atomically on the Redis server; none rebuilds an envelope with
// cjson.encode (which would turn [] into {} and reorder keys): envelopes are moved byte for byte.

// fetchScript pops up to max waiting messages and records each as un-acked in the same atomic
// step, closing kombu's loss window between BRPOP and the MULTI that records the message
// (celery#7950).
//
//	KEYS[1] unacked hash, KEYS[2] unacked_index zset, KEYS[3] dead-letter list,
//	KEYS[4..] the lists, band-major: for each priority step, one list per queue (nq queues).
//	ARGV[1] delivery time (unix seconds, the score kombu writes), ARGV[2] dead-letter time
//	(RFC 3339), ARGV[3] nq, ARGV[4] max messages.
//	Returns a flat array, four items per message: the queue's index (0-based, in the given
//	order), the raw envelope, the delivery tag ("" when poison), the reason ("" when recorded).
//
// Each message is taken in kombu's order: the first non-empty list, priority-major; within a
// band the queue that just delivered moves to the end (round_robin_cycle), so one call is as fair
// as one BRPOP per message. The envelope is decoded with pcall: an element that is not a JSON
// object with properties.delivery_tag and delivery_info.exchange/routing_key (which a Python
// worker would crash on, losing it) goes to the dead-letter list as "<meta json>\n<raw bytes>" in
// the same step.
var fetchScript = redis.NewScript(-1, `
local now = ARGV[1]
local nq = tonumber(ARGV[3])
local max = tonumber(ARGV[4])
local nbands = (#KEYS - 3) / nq
local order = {}
for q = 1, nq do order[q] = q end
local out = {}
for n = 1, max do
  local raw, qi, src
  for b = 0, nbands - 1 do
    for pos = 1, nq do
      local key = KEYS[3 + b * nq + order[pos]]
      raw = redis.call('RPOP', key)
      if raw then
        qi = order[pos]
        src = key
        table.remove(order, pos)
        table.insert(order, qi)
        break
      end
    end
    if raw then break end
  end
  if not raw then break end
  local ok, env = pcall(cjson.decode, raw)
  local reason = ''
  local tag, ex, rk
  if not ok or type(env) ~= 'table' then
    reason = 'envelope is not a JSON object'
  else
    local props = env['properties']
    if type(props) == 'table' then
      tag = props['delivery_tag']
      local di = props['delivery_info']
      if type(di) == 'table' then
        ex = di['exchange']
        rk = di['routing_key']
      end
    end
    if type(tag) ~= 'string' or tag == '' then
      reason = 'missing properties.delivery_tag'
    elseif type(ex) ~= 'string' or type(rk) ~= 'string' then
      reason = 'missing properties.delivery_info.exchange or routing_key'
    end
  end
  if reason ~= '' then
    local meta = cjson.encode({reason = reason, queue = src, time = ARGV[2], tag = ''})
    redis.call('LPUSH', KEYS[3], meta .. '\n' .. raw)
    tag = ''
  else
    redis.call('ZADD', KEYS[2], now, tag)
    redis.call('HSET', KEYS[1], tag, '[' .. raw .. ',' .. cjson.encode(ex) .. ',' .. cjson.encode(rk) .. ']')
  end
  out[#out + 1] = qi - 1
  out[#out + 1] = raw
  out[#out + 1] = tag
  out[#out + 1] = reason
end
return out
`)

// deadLetterScript moves a recorded message out of the un-acked set into the dead-letter list.
//
//	KEYS[1] unacked, KEYS[2] unacked_index, KEYS[3] dead-letter list.
//	ARGV[1] delivery tag, ARGV[2] the dead-letter element ("<meta json>\n<raw bytes>").
//	Returns 1 when moved, 0 when the tag was no longer held (acked or restored meanwhile).
var deadLetterScript = redis.NewScript(3, `
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('LPUSH', KEYS[3], ARGV[2])
return 1
`)

// restoreScript puts a held message back on a list if it is still held unchanged.
//
//	KEYS[1] unacked, KEYS[2] unacked_index, KEYS[3] target list.
//	ARGV[1] delivery tag, ARGV[2] the hash value read before (compare), ARGV[3] envelope to push,
//	ARGV[4] "R" to RPUSH (front of the line, kombu's restore) or "L" to LPUSH (back, a requeue).
//	Returns 1 when restored, 0 when the entry changed or vanished meanwhile.
var restoreScript = redis.NewScript(3, `
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
if ARGV[4] == 'L' then
  redis.call('LPUSH', KEYS[3], ARGV[3])
else
  redis.call('RPUSH', KEYS[3], ARGV[3])
end
return 1
`)

// releaseLockScript deletes a lock only if it still holds our token (redis-py Lock.release).
//
//	KEYS[1] lock key, ARGV[1] token. Returns 1 when released.
var releaseLockScript = redis.NewScript(1, `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)
