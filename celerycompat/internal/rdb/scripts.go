package rdb

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

// storeScript is Celery's _store_result (GET, keep an existing SUCCESS, else SETEX+PUBLISH) done
// atomically, so two writers cannot both pass the SUCCESS check.
//
// KEYS[1] result key, also the pub/sub channel
// ARGV[1] result JSON; ARGV[2] TTL seconds, "0" for a plain SET
// returns 1 when stored and published, 0 when an existing SUCCESS was kept.
var storeScript = redis.NewScript(1, `
local cur = redis.call('GET', KEYS[1])
if cur and string.find(cur, '"SUCCESS"', 1, true) then
  local ok, meta = pcall(cjson.decode, cur)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then
    return 0
  end
end
if ARGV[2] ~= '0' then
  redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
`)

// chordPartScript records one finished header part and reports whether it completed the chord,
// claiming the body's dispatch so exactly one caller sees completion. It does what Celery 5.2's
// pipeline (ZADD .j, ZCOUNT, GET .t, GET .s, EXPIRE) does, plus Celery 5.7's guards: the .d set
// counts each (task id, index) once, the .c key holds the dispatch claim and, after cleanup,
// the "done" marker that makes late duplicates no-ops. Python 5.2 and 5.7 workers finishing
// other parts of the same chord interoperate: each part's count is taken atomically, so only
// the part that makes it reach the size sees completion.
//
// KEYS: .j .t .s .d <group meta> .c
// ARGV[1] task id, [2] member JSON [1, id, state, result], [3] score (group_index or "+inf"),
// [4] expires seconds (0: none), [5] claim token, [6] claim TTL seconds
// returns {-1} after cleanup, {0, count} while incomplete (or claimed by another caller),
// {1, count, ZRANGE .j 0 -1} to the caller that completed the chord.
var chordPartScript = redis.NewScript(6, `
if redis.call('GET', KEYS[6]) == 'done' then
  return {-1}
end
local member = ARGV[1] .. ':' .. ARGV[3]
if redis.call('SISMEMBER', KEYS[4], member) == 0 then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
  redis.call('SADD', KEYS[4], member)
end
local count = redis.call('ZCOUNT', KEYS[1], '-inf', '+inf')
local ex = tonumber(ARGV[4])
if ex > 0 then
  for i = 1, 5 do
    redis.call('EXPIRE', KEYS[i], ex)
  end
end
local t = redis.call('GET', KEYS[2])
local s = redis.call('GET', KEYS[3])
if not s or count ~= tonumber(s) + tonumber(t or 0) then
  return {0, count}
end
if not redis.call('SET', KEYS[6], ARGV[5], 'NX', 'EX', ARGV[6]) then
  return {0, count}
end
return {1, count, redis.call('ZRANGE', KEYS[1], 0, -1)}
`)

// pushBeforeScript is PushAll's pipeline (SADD bindings, LPUSH per list) as one script that
// pushes nothing once Redis's clock has passed the caller's deadline, so a publish that reached
// a Redis which then hung, and that Redis runs only after the caller gave up, queues nothing.
//
//	KEYS[i] the i-th key written: binding sets and lists, each once.
//	ARGV[1] the deadline, Unix ms. Then, for each key in order, three or more: the command
//	("SADD" or "LPUSH"), the number of values m, then m values (LPUSH: envelopes in push order).
//	Returns {0} when Redis's TIME is past the deadline (nothing written); else {1, e1, ..., ek}
//	with ei the first error reply for key i ("" when its commands succeeded).
//
// One LPUSH with many values leaves a list as that many LPUSHes in the same order would, so a
// batch costs a command per list rather than per message. Each runs under pcall, so one key's
// error reply (WRONGTYPE) fails the messages for that key only. Values go in chunks of 1000 to
// stay within Lua's unpack limit. TIME makes the script non-deterministic: replicate_commands
// (the default since Redis 5) replicates the writes, not the script.
var pushBeforeScript = redis.NewScript(-1, pushBeforeSrc)

const pushBeforeSrc = `
redis.replicate_commands()
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[1]) then
  return {0}
end
local out = {1}
local a = 2
for k = 1, #KEYS do
  local cmd, m = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  local err = ''
  for from = a, a + m - 1, 1000 do
    local r = redis.pcall(cmd, KEYS[k], unpack(ARGV, from, math.min(from + 999, a + m - 1)))
    if type(r) == 'table' and r.err and err == '' then
      err = r.err
    end
  end
  a = a + m
  out[#out + 1] = err
end
return out
`
