package rdb

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/gomodule/redigo/redis"
)

// StoreResult runs the store script (Celery's _store_result, atomically): unless key holds a
// SUCCESS it writes data with SETEX ttl seconds (SET when ttl is 0) and PUBLISHes it on key. It
// reports false when an existing SUCCESS was kept.
func StoreResult(ctx context.Context, c redis.Conn, key string, data []byte, ttl int) (bool, error) {
	n, err := redis.Int(storeScript.DoContext(ctx, c, key, data, strconv.Itoa(ttl)))
	return n == 1, err
}

// Get returns the value of key, nil when it does not exist.
func Get(ctx context.Context, c redis.Conn, key string) ([]byte, error) {
	raw, err := redis.Bytes(redis.DoContext(c, ctx, "GET", key))
	if errors.Is(err, redis.ErrNil) {
		return nil, nil
	}
	return raw, err
}

// Del deletes keys.
func Del(ctx context.Context, c redis.Conn, keys ...string) error {
	args := make([]any, len(keys))
	for i, k := range keys {
		args[i] = k
	}
	_, err := redis.DoContext(c, ctx, "DEL", args...)
	return err
}

// ChordPart is one chord header part to record with the chord-part script.
type ChordPart struct {
	GroupID, TaskID string
	Member          []byte // [1, task id, state, result] as Celery writes it
	Score           string // group_index, or "+inf"
	TTL             int    // result_expires seconds, 0 for none
	Token           string // this caller's dispatch claim
	ClaimTTL        time.Duration
}

// ChordPartReturn records p (the chord-part script). complete is true for the one caller whose
// part completed the chord and won its dispatch claim; members are then the header results
// ordered by score.
func ChordPartReturn(ctx context.Context, c redis.Conn, k Keys, p ChordPart) (complete bool, members [][]byte, err error) {
	g := p.GroupID
	reply, err := redis.Values(chordPartScript.DoContext(ctx, c,
		k.ChordJoin(g), k.ChordCounter(g), k.ChordSize(g), k.ChordDone(g), k.GroupMeta(g), k.ChordClaim(g),
		p.TaskID, p.Member, p.Score, p.TTL, p.Token, int(p.ClaimTTL/time.Second)))
	if err != nil {
		return false, nil, err
	}
	if flag, _ := redis.Int(reply[0], nil); flag != 1 || len(reply) < 3 {
		return false, nil, nil
	}
	members, err = redis.ByteSlices(reply[2], nil)
	return err == nil, members, err
}

// CleanupChord deletes a completed chord's bookkeeping (.j .t .s .d) and leaves the "done" marker
// in .c for doneTTL, in one MULTI.
func CleanupChord(ctx context.Context, c redis.Conn, k Keys, groupID string, doneTTL time.Duration) error {
	_ = c.Send("MULTI")
	_ = c.Send("DEL", k.ChordJoin(groupID), k.ChordCounter(groupID), k.ChordSize(groupID), k.ChordDone(groupID))
	_ = c.Send("SET", k.ChordClaim(groupID), "done", "EX", int(doneTTL/time.Second))
	_, err := redis.DoContext(c, ctx, "EXEC")
	return err
}

// SetChordSize deletes a previous run's dispatch claim and sets and publishes the chord size
// (Celery's set_chord_size), in one MULTI.
func SetChordSize(ctx context.Context, c redis.Conn, k Keys, groupID string, n, ttl int) error {
	_ = c.Send("MULTI")
	_ = c.Send("DEL", k.ChordClaim(groupID))
	sendSet(c, k.ChordSize(groupID), strconv.Itoa(n), ttl)
	_, err := redis.DoContext(c, ctx, "EXEC")
	return err
}

// SetPublish is Celery's _set in one MULTI: SETEX key ttl value (SET when ttl is 0) and PUBLISH
// value on key.
func SetPublish(ctx context.Context, c redis.Conn, key, value string, ttl int) error {
	_ = c.Send("MULTI")
	sendSet(c, key, value, ttl)
	_, err := redis.DoContext(c, ctx, "EXEC")
	return err
}

func sendSet(c redis.Conn, key, value string, ttl int) {
	if ttl > 0 {
		_ = c.Send("SETEX", key, ttl, value)
	} else {
		_ = c.Send("SET", key, value)
	}
	_ = c.Send("PUBLISH", key, value)
}

// Subscribe queues SUBSCRIBE for channels, at most batch per command, and flushes them.
func Subscribe(c redis.Conn, channels []string, batch int) error {
	args := make([]any, 0, batch)
	for i, ch := range channels {
		args = append(args, ch)
		if len(args) == batch || i == len(channels)-1 {
			if err := c.Send("SUBSCRIBE", args...); err != nil {
				return err
			}
			args = args[:0]
		}
	}
	return c.Flush()
}

// Unsubscribe sends UNSUBSCRIBE channel.
func Unsubscribe(c redis.Conn, channel string) error {
	if err := c.Send("UNSUBSCRIBE", channel); err != nil {
		return err
	}
	return c.Flush()
}
