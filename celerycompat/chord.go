package celerycompat

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// Chord keys Celery 5.7 added next to .j/.t/.s: .d is the set of "<task_id>:<score>" parts
// already counted, .c the dispatch claim (a token while a worker publishes the body, then
// "done").
func chordDoneKey(k Keys, gid string) string  { return k.GroupMeta(gid) + ".d" }
func chordClaimKey(k Keys, gid string) string { return k.GroupMeta(gid) + ".c" }

const (
	// chordClaimTTL bounds how long the worker that completed a chord owns its dispatch: if it
	// dies before CleanupChord, a redelivered header part can complete the chord again after
	// this (Celery 5.7 uses a similar lease).
	chordClaimTTL = time.Minute
	// chordDoneTTL keeps Celery 5.7's "done" marker, which stops late duplicates of header
	// parts from recreating the chord state.
	chordDoneTTL = 300 * time.Second
)

// ChordError is Celery's ChordError for a chord whose header part failed: Python's chord
// bookkeeping raises it as "Dependency <task_id> raised <repr(exception)>" and stores it as the
// body's FAILURE. ErrorToTaskError turns it into celery.exceptions.ChordError.
type ChordError struct {
	GroupID string
	TaskID  string     // the header part that failed
	Cause   *TaskError // its exception
}

// Message is the text Python gives the ChordError.
func (e *ChordError) Message() string {
	return fmt.Sprintf("Dependency %s raised %s", e.TaskID, protocol.PyExcRepr(e.Cause))
}

func (e *ChordError) Error() string {
	return "celerycompat: chord " + e.GroupID + ": " + e.Message()
}

// Unwrap returns the failed part's exception.
func (e *ChordError) Unwrap() error { return e.Cause }

// TaskError is the exception stored for the chord body: celery.exceptions.ChordError, which
// Python resolves to its real ChordError class.
func (e *ChordError) TaskError() *TaskError {
	return &TaskError{ExcType: "ChordError", ExcModule: "celery.exceptions", ExcMessage: []any{e.Message()}}
}

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

// ChordPartReturn is Celery's on_chord_part_return for the Redis backend, to be called by the
// worker after it stored the state of a task whose message carries a chord (Message.Embed.Chord)
// and a group. It records [1, taskID, state, result] in the chord's sorted set at score
// groupIndex (nil: +inf) and reports ready=true to exactly one caller: the one whose part
// completed the chord. That caller gets the header results ordered by group index, publishes the
// body with them prepended to its args, then calls CleanupChord. When a part failed (FAILURE or
// REVOKED) the completing caller gets ready=true and a *ChordError instead: store it as the
// body's FAILURE (MarkFailure accepts it) and call CleanupChord.
//
// result is the part's return value, or its error for FAILURE/REVOKED/RETRY.
func (b *Backend) ChordPartReturn(ctx context.Context, groupID string, groupIndex *int, taskID string, state State, result any) (ready bool, results []any, err error) {
	if groupID == "" || taskID == "" {
		return false, nil, fmt.Errorf("%w: chord part return: empty group or task id", ErrInvalidConfig)
	}
	res, err := b.encodeResult(result) // an error becomes Celery's exception dict
	if err != nil {
		return false, nil, fmt.Errorf("celerycompat: chord %s part %s: %w", groupID, taskID, err)
	}
	var member bytes.Buffer
	member.WriteString("[1, ")
	protocol.WritePyString(&member, taskID)
	member.WriteString(", ")
	protocol.WritePyString(&member, string(state))
	member.WriteString(", ")
	member.Write(res)
	member.WriteByte(']')
	score := "+inf"
	if groupIndex != nil {
		score = strconv.Itoa(*groupIndex)
	}
	var tok [16]byte
	_, _ = rand.Read(tok[:]) // never fails
	k := b.keys
	c, err := b.conn(ctx)
	if err != nil {
		return false, nil, err
	}
	defer c.Close()
	reply, err := redis.Values(chordPartScript.DoContext(ctx, c,
		k.ChordJoin(groupID), k.ChordCounter(groupID), k.ChordSize(groupID), chordDoneKey(k, groupID),
		k.GroupMeta(groupID), chordClaimKey(k, groupID),
		taskID, member.Bytes(), score, b.ttl, hex.EncodeToString(tok[:]), int(chordClaimTTL/time.Second)))
	if err != nil {
		return false, nil, fmt.Errorf("%w: chord %s part %s: %w", errBackendRedis, groupID, taskID, err)
	}
	if flag, _ := redis.Int(reply[0], nil); flag != 1 || len(reply) < 3 {
		return false, nil, nil
	}
	parts, err := redis.ByteSlices(reply[2], nil)
	if err != nil {
		return false, nil, fmt.Errorf("%w: chord %s: read results: %w", errBackendRedis, groupID, err)
	}
	results, err = b.decodeChordParts(groupID, parts)
	return true, results, err
}

// decodeChordParts decodes ZRANGE .j members in order; the first failed part gives a ChordError.
func (b *Backend) decodeChordParts(groupID string, parts [][]byte) ([]any, error) {
	results := make([]any, 0, len(parts))
	for i, p := range parts {
		field := fmt.Sprintf("%s[%d]", b.keys.ChordJoin(groupID), i)
		v, err := b.codec.UnmarshalValue(p)
		if err != nil {
			return nil, &DecodeError{Field: field, Err: err}
		}
		tup, ok := v.([]any)
		if !ok || len(tup) != 4 {
			return nil, &DecodeError{Field: field, Err: errors.New("not a [1, task_id, state, result] list")}
		}
		tid, _ := tup[1].(string)
		st, ok := tup[2].(string)
		if !ok {
			return nil, &DecodeError{Field: field + "[2]", Err: errors.New("state is not a string")}
		}
		val := tup[3]
		if State(st).IsException() && val != nil {
			te, err := protocol.TaskErrorFromValue(val, State(st), "", field+"[3]")
			if err != nil {
				return nil, err
			}
			val = te
		}
		if State(st).Propagates() {
			te, _ := val.(*TaskError)
			if te == nil {
				te = &TaskError{State: st}
			}
			return nil, &ChordError{GroupID: groupID, TaskID: tid, Cause: te}
		}
		results = append(results, val)
	}
	return results, nil
}

// CleanupChord deletes a completed chord's bookkeeping (.j .t .s and Celery 5.7's .d) and leaves
// 5.7's "done" marker in .c, so late duplicates of header parts are ignored.
func (b *Backend) CleanupChord(ctx context.Context, groupID string) error {
	k := b.keys
	return b.multi(ctx, "cleanup chord "+groupID, func(c redis.Conn) {
		c.Send("DEL", k.ChordJoin(groupID), k.ChordCounter(groupID), k.ChordSize(groupID), chordDoneKey(k, groupID))
		c.Send("SET", chordClaimKey(k, groupID), "done", "EX", int(chordDoneTTL/time.Second))
	})
}

// SetChordSize records the number of header tasks of chord groupID, as Celery's set_chord_size
// does when the chord is applied: SETEX .s result_expires n and PUBLISH .s n (Celery 5.2), after
// deleting a previous run's claim (Celery 5.7).
func (b *Backend) SetChordSize(ctx context.Context, groupID string, n int) error {
	if n < 0 {
		return fmt.Errorf("%w: chord size %d", ErrInvalidConfig, n)
	}
	k := b.keys
	return b.multi(ctx, "set chord size "+groupID, func(c redis.Conn) {
		c.Send("DEL", chordClaimKey(k, groupID))
		b.sendSet(c, k.ChordSize(groupID), strconv.Itoa(n))
	})
}

// SaveGroup stores a GroupResult like GroupResult.save(): celery-taskset-meta-<gid> =
// {"result": [[gid, null], [[[tid, null], null], ...]]}, with SETEX and PUBLISH.
func (b *Backend) SaveGroup(ctx context.Context, groupID string, taskIDs []string) error {
	var buf bytes.Buffer
	buf.WriteString(`{"result": [[`)
	protocol.WritePyString(&buf, groupID)
	buf.WriteString(`, null], [`)
	for i, id := range taskIDs {
		if i > 0 {
			buf.WriteString(", ")
		}
		buf.WriteString(`[[`)
		protocol.WritePyString(&buf, id)
		buf.WriteString(`, null], null]`)
	}
	buf.WriteString(`]]}`)
	return b.multi(ctx, "save group "+groupID, func(c redis.Conn) {
		b.sendSet(c, b.keys.GroupMeta(groupID), buf.String())
	})
}

// sendSet queues Celery's _set: SETEX (or SET without expiry) plus PUBLISH of the same value.
func (b *Backend) sendSet(c redis.Conn, key, value string) {
	if b.ttl > 0 {
		c.Send("SETEX", key, b.ttl, value)
	} else {
		c.Send("SET", key, value)
	}
	c.Send("PUBLISH", key, value)
}

// multi runs the commands queued by fn in one MULTI/EXEC.
func (b *Backend) multi(ctx context.Context, what string, fn func(redis.Conn)) error {
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	c.Send("MULTI")
	fn(c)
	if _, err := redis.DoContext(c, ctx, "EXEC"); err != nil {
		return fmt.Errorf("%w: %s: %w", errBackendRedis, what, err)
	}
	return nil
}
