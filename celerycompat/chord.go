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

	"github.com/celerybridge/celerybridge/celerycompat/internal/rdb"

	"github.com/gomodule/redigo/redis"

	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

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
	c, err := b.conn(ctx)
	if err != nil {
		return false, nil, err
	}
	defer c.Close()
	complete, parts, err := rdb.ChordPartReturn(ctx, c, b.keys, rdb.ChordPart{GroupID: groupID, TaskID: taskID,
		Member: member.Bytes(), Score: score, TTL: b.ttl, Token: hex.EncodeToString(tok[:]), ClaimTTL: chordClaimTTL})
	if err != nil {
		return false, nil, fmt.Errorf("%w: chord %s part %s: %w", errBackendRedis, groupID, taskID, err)
	}
	if !complete {
		return false, nil, nil
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
	return b.with(ctx, "cleanup chord "+groupID, func(c redis.Conn) error {
		return rdb.CleanupChord(ctx, c, b.keys, groupID, chordDoneTTL)
	})
}

// SetChordSize records the number of header tasks of chord groupID, as Celery's set_chord_size
// does when the chord is applied: SETEX .s result_expires n and PUBLISH .s n (Celery 5.2), after
// deleting a previous run's claim (Celery 5.7).
func (b *Backend) SetChordSize(ctx context.Context, groupID string, n int) error {
	if n < 0 {
		return fmt.Errorf("%w: chord size %d", ErrInvalidConfig, n)
	}
	return b.with(ctx, "set chord size "+groupID, func(c redis.Conn) error {
		return rdb.SetChordSize(ctx, c, b.keys, groupID, n, b.ttl)
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
	return b.with(ctx, "save group "+groupID, func(c redis.Conn) error {
		return rdb.SetPublish(ctx, c, b.keys.GroupMeta(groupID), buf.String(), b.ttl)
	})
}

// with runs fn on a connection of the backend's pool.
func (b *Backend) with(ctx context.Context, what string, fn func(redis.Conn) error) error {
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := fn(c); err != nil {
		return fmt.Errorf("%w: %s: %w", errBackendRedis, what, err)
	}
	return nil
}
