package callback

import "github.com/gomodule/redigo/redis"

// The outbox's Lua scripts. Each runs atomically in Redis, so an event is always in exactly one
// of Due, Leased and Dead (or gone), and its Events record exists while it is in one of them.
// Times are Unix milliseconds computed by the caller's clock. Scores that serve as lease tokens
// are integers well below 2^53, so they survive the round trip through Redis doubles exactly.

// enqueueScript records an event unless it is known.
//
//	KEYS: Events, Due, Since, Delivered
//	ARGV: id, record, due ms, now ms
//	returns 1 when stored, 0 when the id is already pending, in flight or dead, 2 when it was
//	delivered within the retention window.
var enqueueScript = redis.NewScript(4, `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('ZSCORE', KEYS[4], ARGV[1]) then return 2 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
return 1
`)

// claimScript first returns expired leases to Due (their holder died or lost Redis), then moves
// up to limit due events to Leased with the new lease deadline and counts the attempt. Each step
// is one multi-member command for the whole batch, which keeps Redis's share of a delivery small.
//
//	KEYS: Due, Leased, Events, Attempts, Since
//	ARGV: now ms, lease deadline ms, limit, max expired leases to return
//	returns {next wake-up ms or -1, expired leases returned, then per claimed event: id,
//	attempt, since ms, record}. The wake-up is the earliest due time or lease deadline left.
var claimScript = redis.NewScript(5, `
local now = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
if #expired > 0 then
  redis.call('ZREM', KEYS[2], unpack(expired))
  local back = {}
  for _, id in ipairs(expired) do
    back[#back+1] = now
    back[#back+1] = id
  end
  redis.call('ZADD', KEYS[1], unpack(back))
end
local out = {-1, #expired}
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
if #ids > 0 then
  redis.call('ZREM', KEYS[1], unpack(ids))
  local recs = redis.call('HMGET', KEYS[3], unpack(ids))
  local atts = redis.call('HMGET', KEYS[4], unpack(ids))
  local sinces = redis.call('HMGET', KEYS[5], unpack(ids))
  local lease, att, gone = {}, {}, {}
  for i, id in ipairs(ids) do
    if recs[i] then
      local n = (tonumber(atts[i]) or 0) + 1
      lease[#lease+1] = ARGV[2]
      lease[#lease+1] = id
      att[#att+1] = id
      att[#att+1] = n
      out[#out+1] = id
      out[#out+1] = n
      out[#out+1] = sinces[i] or '0'
      out[#out+1] = recs[i]
    else
      gone[#gone+1] = id
    end
  end
  if #lease > 0 then
    redis.call('ZADD', KEYS[2], unpack(lease))
    redis.call('HSET', KEYS[4], unpack(att))
  end
  if #gone > 0 then
    redis.call('HDEL', KEYS[4], unpack(gone))
    redis.call('HDEL', KEYS[5], unpack(gone))
  end
end
local nxt = -1
local d = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if d[2] then nxt = tonumber(d[2]) end
local l = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if l[2] and (nxt < 0 or tonumber(l[2]) < nxt) then nxt = tonumber(l[2]) end
out[1] = nxt
return out
`)

// settleScript records the outcomes of a batch of attempts. Each outcome is four arguments:
// action, id, lease token (the lease deadline the claim returned), data.
//
//	"ok"      delivered: forget the event everywhere (whoever holds it now) and remember the id
//	          in Delivered when retention > 0; data unused. Done for the whole batch at once.
//	"retry"   data is "<due ms>|<last failure JSON>": back to Due at that time.
//	"release" not attempted after all (shutdown): back to Due now, attempt not counted.
//	"dead"    data is the dead-letter JSON: into Dead.
//
// retry, release and dead apply only while the caller still holds the lease (its token equals
// the Leased score); otherwise another dispatcher owns the event and the outcome is dropped.
//
//	KEYS: Events, Due, Leased, Attempts, Since, Last, Dead, DeadInfo, Delivered
//	ARGV: now ms, retention ms (0: none), then the outcomes
//	returns one integer per outcome: 1 applied, 0 dropped.
var settleScript = redis.NewScript(9, `
local now = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])
local res, ok = {}, {}
for i = 3, #ARGV, 4 do
  local action, id, token, data = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3]
  if action == 'ok' then
    ok[#ok+1] = id
    res[#res+1] = 1
  else
    local score = redis.call('ZSCORE', KEYS[3], id)
    if score and tonumber(score) == tonumber(token) then
      redis.call('ZREM', KEYS[3], id)
      if action == 'retry' then
        local sep = string.find(data, '|', 1, true)
        redis.call('ZADD', KEYS[2], string.sub(data, 1, sep - 1), id)
        redis.call('HSET', KEYS[6], id, string.sub(data, sep + 1))
      elseif action == 'release' then
        redis.call('ZADD', KEYS[2], now, id)
        redis.call('HINCRBY', KEYS[4], id, -1)
      else
        redis.call('ZADD', KEYS[7], now, id)
        redis.call('HSET', KEYS[8], id, data)
      end
      res[#res+1] = 1
    else
      res[#res+1] = 0
    end
  end
end
if #ok > 0 then
  redis.call('HDEL', KEYS[1], unpack(ok))
  -- An event is in exactly one of Leased, Due and Dead; look further only if the lease was lost.
  if redis.call('ZREM', KEYS[3], unpack(ok)) < #ok then
    redis.call('ZREM', KEYS[2], unpack(ok))
    redis.call('ZREM', KEYS[7], unpack(ok))
    redis.call('HDEL', KEYS[8], unpack(ok))
  end
  redis.call('HDEL', KEYS[4], unpack(ok))
  redis.call('HDEL', KEYS[5], unpack(ok))
  redis.call('HDEL', KEYS[6], unpack(ok))
  if retention > 0 then
    local seen = {}
    for _, id in ipairs(ok) do
      seen[#seen+1] = now
      seen[#seen+1] = id
    end
    redis.call('ZADD', KEYS[9], unpack(seen))
  end
end
if retention > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', now - retention)
end
return res
`)

// replayScript moves dead letters back to Due with a fresh attempt count and age.
//
//	KEYS: Events, Due, Attempts, Since, Last, Dead, DeadInfo
//	ARGV: now ms, ids...
//	returns one integer per id: 1 replayed, 0 not a dead letter.
var replayScript = redis.NewScript(7, `
local res = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('ZSCORE', KEYS[6], id) and redis.call('HEXISTS', KEYS[1], id) == 1 then
    redis.call('ZREM', KEYS[6], id)
    redis.call('HDEL', KEYS[7], id)
    redis.call('HDEL', KEYS[5], id)
    redis.call('HSET', KEYS[3], id, 0)
    redis.call('HSET', KEYS[4], id, ARGV[1])
    redis.call('ZADD', KEYS[2], ARGV[1], id)
    table.insert(res, 1)
  else
    table.insert(res, 0)
  end
end
return res
`)

// deadScript lists dead letters, oldest first.
//
//	KEYS: Dead, DeadInfo, Events, Attempts, Since
//	ARGV: limit (<= 0: all)
//	returns per dead letter: id, dead ms, info JSON or false, record or false, attempts or
//	false, since ms or false.
var deadScript = redis.NewScript(5, `
local limit = tonumber(ARGV[1])
local stop = -1
if limit > 0 then stop = limit - 1 end
local ids = redis.call('ZRANGE', KEYS[1], 0, stop, 'WITHSCORES')
local out = {}
for i = 1, #ids, 2 do
  local id = ids[i]
  table.insert(out, id)
  table.insert(out, ids[i+1])
  table.insert(out, redis.call('HGET', KEYS[2], id))
  table.insert(out, redis.call('HGET', KEYS[3], id))
  table.insert(out, redis.call('HGET', KEYS[4], id))
  table.insert(out, redis.call('HGET', KEYS[5], id))
end
return out
`)

// statsScript counts the outbox in one consistent read.
//
//	KEYS: Due, Leased, Dead
//	ARGV: now ms
//	returns {pending, of which due now, in flight, dead}.
var statsScript = redis.NewScript(3, `
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1]),
  redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3])}
`)
