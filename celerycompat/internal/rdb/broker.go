package rdb

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
)

// IsReply reports whether err is an error reply of the server (the command ran and was refused),
// as opposed to a broken connection, after which the command's fate is unknown.
func IsReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

// Score is the un-acked score kombu writes for a delivery time: unix seconds, 6 decimals.
func Score(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixNano())/1e9, 'f', 6, 64)
}

// Fetched is one message the fetch script took: the index of its queue (in the order given),
// the raw envelope, its delivery tag, and the reason it was dead-lettered ("" when it is held).
type Fetched struct {
	Queue  int
	Raw    []byte
	Tag    string
	Reason string
}

// Fetch runs the fetch script (scripts.go) on lists, band-major for nq queues, taking up to max
// messages and recording each as un-acked at score Score(now).
func Fetch(ctx context.Context, c redis.Conn, k Keys, lists []string, nq, max int, now time.Time) ([]Fetched, error) {
	args := make([]any, 0, 3+len(lists)+5)
	args = append(args, 3+len(lists), k.Unacked(), k.UnackedIndex(), k.DeadLetter())
	for _, l := range lists {
		args = append(args, l)
	}
	args = append(args, Score(now), now.UTC().Format(time.RFC3339Nano), nq, max)
	reply, err := redis.Values(fetchScript.DoContext(ctx, c, args...))
	if err != nil {
		return nil, err
	}
	out := make([]Fetched, 0, len(reply)/4)
	for len(reply) >= 4 {
		var f Fetched
		if _, err := redis.Scan(reply[:4], &f.Queue, &f.Raw, &f.Tag, &f.Reason); err != nil {
			return out, fmt.Errorf("fetch reply: %w", err)
		}
		reply = reply[4:]
		out = append(out, f)
	}
	return out, nil
}

// Ack removes tags from the un-acked hash and index in one MULTI (kombu's basic_ack).
func Ack(c redis.Conn, k Keys, tags []string) error {
	zrem := make([]any, 0, len(tags)+1)
	hdel := make([]any, 0, len(tags)+1)
	zrem = append(zrem, k.UnackedIndex())
	hdel = append(hdel, k.Unacked())
	for _, t := range tags {
		zrem, hdel = append(zrem, t), append(hdel, t)
	}
	_ = c.Send("MULTI")
	_ = c.Send("ZREM", zrem...)
	_ = c.Send("HDEL", hdel...)
	_, err := c.Do("EXEC")
	return err
}

// DeadLetterHeld moves held message tag to the dead-letter list as elem, atomically (the
// dead-letter script). It reports false when tag was no longer held.
func DeadLetterHeld(ctx context.Context, c redis.Conn, k Keys, tag string, elem []byte) (bool, error) {
	n, err := redis.Int(deadLetterScript.DoContext(ctx, c, k.Unacked(), k.UnackedIndex(), k.DeadLetter(), tag, elem))
	return n == 1, err
}

// DeadLetters returns up to limit dead-letter elements, newest first (limit <= 0: all).
func DeadLetters(c redis.Conn, k Keys, limit int) ([][]byte, error) {
	return redis.ByteSlices(c.Do("LRANGE", k.DeadLetter(), 0, limit-1))
}

// Refresh rewrites the un-acked score of the tags still held to score (ZADD XX), in chunks of
// 512 in one pipeline.
func Refresh(c redis.Conn, k Keys, tags []string, score string) error {
	const chunk = 512
	n := 0
	for start := 0; start < len(tags); start += chunk {
		end := min(start+chunk, len(tags))
		args := make([]any, 0, 2+2*(end-start))
		args = append(args, k.UnackedIndex(), "XX")
		for _, t := range tags[start:end] {
			args = append(args, score, t)
		}
		if err := c.Send("ZADD", args...); err != nil {
			return err
		}
		n++
	}
	if err := c.Flush(); err != nil {
		return err
	}
	for range n {
		if _, err := c.Receive(); err != nil {
			return err
		}
	}
	return nil
}

// LockUnacked takes kombu's unacked_mutex with token for ttl; false when another holds it.
func LockUnacked(c redis.Conn, k Keys, token string, ttl time.Duration) (bool, error) {
	ok, err := redis.String(c.Do("SET", k.UnackedMutex(), token, "NX", "PX", ttl.Milliseconds()))
	if errors.Is(err, redis.ErrNil) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return ok == "OK", nil
}

// UnlockUnacked releases unacked_mutex if it still holds token (redis-py's Lock.release).
func UnlockUnacked(ctx context.Context, c redis.Conn, k Keys, token string) error {
	_, err := releaseLockScript.DoContext(ctx, c, k.UnackedMutex(), token)
	return err
}

// DueUnacked lists the tags delivered at or before score ceiling, newest first (kombu's
// ZREVRANGEBYSCORE in restore_visible).
func DueUnacked(c redis.Conn, k Keys, ceiling string) ([]string, error) {
	return redis.Strings(c.Do("ZREVRANGEBYSCORE", k.UnackedIndex(), ceiling, 0))
}

// Held returns the un-acked entry of tag ([envelope, exchange, routing_key]). When the tag is no
// longer held it drops its index entry and returns nil.
func Held(c redis.Conn, k Keys, tag string) ([]byte, error) {
	held, err := redis.Bytes(c.Do("HGET", k.Unacked(), tag))
	if errors.Is(err, redis.ErrNil) {
		_, err = c.Do("ZREM", k.UnackedIndex(), tag)
		return nil, err
	}
	return held, err
}

// Restore puts held message tag back on list target as env, if its un-acked entry still equals
// held (the restore script): at the front (RPUSH, kombu's restore) or, with back, at the back
// (LPUSH, a requeue). It reports false when the entry changed or vanished meanwhile.
func Restore(ctx context.Context, c redis.Conn, k Keys, target, tag string, held, env []byte, back bool) (bool, error) {
	dir := "R"
	if back {
		dir = "L"
	}
	n, err := redis.Int(restoreScript.DoContext(ctx, c, k.Unacked(), k.UnackedIndex(), target, tag, held, env, dir))
	return n == 1, err
}

// Bindings returns the members of exchange's binding set.
func Bindings(c redis.Conn, k Keys, exchange string) ([]string, error) {
	return redis.Strings(c.Do("SMEMBERS", k.Binding(exchange)))
}

// DeclareQueue writes kombu's binding of a queue named after itself (exchange and routing key =
// queue) in both binding tables (kombu 5.7's _kombu.binding_permanent too).
func DeclareQueue(ctx context.Context, c redis.Conn, k Keys, queue string) error {
	member := BindingMember(queue, "", queue)
	_ = c.Send("SADD", k.Binding(queue), member)
	_, err := redis.DoContext(c, ctx, "SADD", k.PermanentBinding(queue), member)
	return err
}

// Push is one message of a publish pipeline: its envelope, the lists it goes to, and, when
// non-empty, a queue whose binding is declared first.
type Push struct {
	Raw     []byte
	Lists   []string
	Declare string
}

// PushAll sends pushes in one pipeline (SADD bindings, LPUSH per list) and returns one error per
// push. broken is the index of the first push whose reply was lost with the connection (its fate
// and the rest's are unknown; len(pushes) when none), with brokenErr the connection's error.
func PushAll(c redis.Conn, k Keys, pushes []Push) (errs []error, broken int, brokenErr error) {
	errs = make([]error, len(pushes))
	replies := make([]int, len(pushes))
	for i, p := range pushes {
		if p.Declare != "" {
			member := BindingMember(p.Declare, "", p.Declare)
			_ = c.Send("SADD", k.Binding(p.Declare), member)
			_ = c.Send("SADD", k.PermanentBinding(p.Declare), member)
			replies[i] += 2
		}
		for _, l := range p.Lists {
			_ = c.Send("LPUSH", l, p.Raw)
			replies[i]++
		}
	}
	if err := c.Flush(); err != nil {
		return errs, 0, err
	}
	for i := range pushes {
		for range replies[i] {
			if _, err := c.Receive(); err != nil {
				if !IsReply(err) { // no answer for this one or the rest
					return errs, i, err
				}
				if errs[i] == nil {
					errs[i] = err
				}
			}
		}
	}
	return errs, len(pushes), nil
}

// ErrPastDeadline is PushAllBefore's error for every push when Redis ran it after its deadline,
// or the deadline had passed before it was sent: nothing was written.
var ErrPastDeadline = errors.New("deadline passed by the server's clock")

// PushAllBefore is PushAll in one script (pushBeforeScript) that writes nothing when Redis's
// clock (TIME) is past deadline; then every push fails with ErrPastDeadline. Its results mean
// what PushAll's do; a connection error loses every push's reply (broken is 0). The reply is
// awaited for timeout (what is left until deadline by the caller's clock), not longer: the
// pool's read timeout does not apply. When timeout is not positive nothing is sent and every
// push fails with ErrPastDeadline.
//
// Comparing deadline, taken from the caller's clock, with Redis's assumes the two agree to well
// within the time the caller leaves itself (NTP keeps them within milliseconds). A Redis clock
// behind by d lets a push run up to d late; ahead by d refuses pushes with less than d left.
func PushAllBefore(c redis.Conn, k Keys, pushes []Push, deadline time.Time, timeout time.Duration) (errs []error, broken int, brokenErr error) {
	errs = make([]error, len(pushes))
	if timeout <= 0 { // past the deadline already: send nothing
		for i := range errs {
			errs[i] = ErrPastDeadline
		}
		return errs, len(pushes), nil
	}
	// One group per key written, in first-use order, with the pushes it carries.
	type group struct {
		cmd    string
		vals   []any
		pushes []int
	}
	var groups []*group
	var keys []any
	byKey := map[string]*group{}
	add := func(cmd, key string, val any, push int) {
		g := byKey[cmd+" "+key]
		if g == nil {
			g = &group{cmd: cmd}
			byKey[cmd+" "+key] = g
			groups = append(groups, g)
			keys = append(keys, key)
		}
		g.vals = append(g.vals, val)
		if len(g.pushes) == 0 || g.pushes[len(g.pushes)-1] != push {
			g.pushes = append(g.pushes, push)
		}
	}
	for i, p := range pushes {
		if p.Declare != "" {
			member := BindingMember(p.Declare, "", p.Declare)
			add("SADD", k.Binding(p.Declare), member, i)
			add("SADD", k.PermanentBinding(p.Declare), member, i)
		}
		for _, l := range p.Lists {
			add("LPUSH", l, p.Raw, i)
		}
	}
	args := make([]any, 0, 2+len(keys)+3*len(groups)+len(pushes))
	args = append(args, len(keys))
	args = append(args, keys...)
	args = append(args, deadline.UnixMilli())
	for _, g := range groups {
		args = append(args, g.cmd, len(g.vals))
		args = append(args, g.vals...)
	}
	reply, err := redis.Values(evalWithin(c, pushBeforeScript, pushBeforeSrc, timeout, args))
	if err != nil {
		if !IsReply(err) {
			return errs, 0, err
		}
		for i := range errs { // the script did not run: it failed as a whole
			errs[i] = err
		}
		return errs, len(pushes), nil
	}
	if len(reply) == 1 {
		if ok, _ := redis.Int(reply[0], nil); ok == 0 {
			for i := range errs {
				errs[i] = ErrPastDeadline
			}
			return errs, len(pushes), nil
		}
	}
	if len(reply) != len(groups)+1 { // cannot happen with this script; fail, not retry
		for i := range errs {
			errs[i] = fmt.Errorf("push script: %d replies for %d keys", len(reply)-1, len(groups))
		}
		return errs, len(pushes), nil
	}
	for gi, r := range reply[1:] {
		if msg, _ := redis.String(r, nil); msg != "" {
			for _, i := range groups[gi].pushes {
				if errs[i] == nil {
					errs[i] = redis.Error(msg)
				}
			}
		}
	}
	return errs, len(pushes), nil
}

// evalWithin runs script s (source src; args start with the key count) with timeout (positive)
// as the read deadline: EVALSHA, then EVAL when Redis does not have it yet. Unlike Script.DoContext it
// starts no goroutine per call (a cost single publishes measurably paid).
func evalWithin(c redis.Conn, s *redis.Script, src string, timeout time.Duration, args []any) (any, error) {
	do := c.Do // a Conn without per-call timeouts keeps its own read timeout
	if ct, ok := c.(redis.ConnWithTimeout); ok {
		do = func(cmd string, args ...any) (any, error) { return ct.DoWithTimeout(timeout, cmd, args...) }
	}
	reply, err := do("EVALSHA", append([]any{s.Hash()}, args...)...)
	var re redis.Error
	if errors.As(err, &re) && strings.HasPrefix(string(re), "NOSCRIPT ") {
		reply, err = do("EVAL", append([]any{src}, args...)...)
	}
	return reply, err
}

// QueueLengths returns LLEN of each of lists, in one pipeline.
func QueueLengths(c redis.Conn, lists []string) ([]int, error) {
	for _, l := range lists {
		if err := c.Send("LLEN", l); err != nil {
			return nil, err
		}
	}
	if err := c.Flush(); err != nil {
		return nil, err
	}
	out := make([]int, len(lists))
	for i := range lists {
		n, err := redis.Int(c.Receive())
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}

// ErrWaitUnsupported means the server has no BLMOVE (Redis < 6.2).
var ErrWaitUnsupported = errors.New("BLMOVE not supported by this Redis server")

// WaitList blocks until list is non-empty or timeout passes, and reports whether it is. It
// removes nothing: BLMOVE list list RIGHT RIGHT takes the tail element and pushes it back to the
// tail in one atomic step. The read deadline is the wait plus a margin, so a pool without a read
// timeout still notices a dead server.
func WaitList(ctx context.Context, c redis.Conn, list string, timeout time.Duration) (bool, error) {
	secs := strconv.FormatFloat(timeout.Seconds(), 'f', -1, 64)
	wctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	var reply any
	var err error
	if cc, ok := c.(redis.ConnWithContext); ok {
		reply, err = cc.DoContext(wctx, "BLMOVE", list, list, "RIGHT", "RIGHT", secs)
	} else {
		reply, err = c.Do("BLMOVE", list, list, "RIGHT", "RIGHT", secs)
	}
	if err != nil {
		var re redis.Error
		if errors.As(err, &re) && strings.Contains(strings.ToLower(string(re)), "unknown command") {
			return false, ErrWaitUnsupported
		}
		return false, err
	}
	return reply != nil, nil
}

// WaitReplicas runs WAIT n timeout and returns how many replicas acknowledged.
func WaitReplicas(ctx context.Context, c redis.Conn, n int, timeout time.Duration) (int, error) {
	return redis.Int(redis.DoContext(c, ctx, "WAIT", n, timeout.Milliseconds()))
}

// ClientInfo returns the CLIENT INFO line of c's connection (Redis 6.2+).
func ClientInfo(c redis.Conn) (string, error) {
	return redis.String(c.Do("CLIENT", "INFO"))
}

// Ping checks that c's server answers.
func Ping(c redis.Conn) error {
	_, err := c.Do("PING")
	return err
}
