package rdb

import (
	"context"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Remote control and events, as kombu's Redis transport carries them: broadcasts are PUBLISHed
// on an exchange's fanout channel (Keys.Fanout), which subscribers PSUBSCRIBE; replies are
// LPUSHed to the lists of the queues bound to the reply exchange (Keys.Binding).

// Bind adds member to exchange's binding set.
func Bind(ctx context.Context, c redis.Conn, k Keys, exchange, member string) error {
	_, err := redis.DoContext(c, ctx, "SADD", k.Binding(exchange), member)
	return err
}

// Unbind removes member from exchange's binding set.
func Unbind(ctx context.Context, c redis.Conn, k Keys, exchange, member string) error {
	_, err := redis.DoContext(c, ctx, "SREM", k.Binding(exchange), member)
	return err
}

// BindingsContext is Bindings bounded by ctx.
func BindingsContext(ctx context.Context, c redis.Conn, k Keys, exchange string) ([]string, error) {
	return redis.Strings(redis.DoContext(c, ctx, "SMEMBERS", k.Binding(exchange)))
}

// PSubscribe subscribes psc to patterns.
func PSubscribe(psc redis.PubSubConn, patterns ...string) error {
	args := make([]any, len(patterns))
	for i, p := range patterns {
		args[i] = p
	}
	return psc.PSubscribe(args...)
}

// PUnsubscribe ends every pattern subscription of psc.
func PUnsubscribe(psc redis.PubSubConn) error { return psc.PUnsubscribe() }

// PingPubSub sends a PING on a subscribed connection (its PONG shows the connection lives).
func PingPubSub(psc redis.PubSubConn) error { return psc.Ping("") }

// Publish PUBLISHes payload on channel.
func Publish(ctx context.Context, c redis.Conn, channel string, payload []byte) error {
	_, err := redis.DoContext(c, ctx, "PUBLISH", channel, payload)
	return err
}

// PublishMany PUBLISHes n payloads in one pipeline; next gives the i-th channel and payload (the
// payload may be reused after next returns: Send copies it out).
func PublishMany(c redis.Conn, n int, next func(i int) (channel string, payload []byte, err error)) error {
	for i := range n {
		ch, payload, err := next(i)
		if err != nil {
			return err
		}
		if err := c.Send("PUBLISH", ch, payload); err != nil {
			return err
		}
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

// PushReply LPUSHes payload to each of lists and renews each list's expiry (kombu's
// reply_queue_expires), in one pipeline.
func PushReply(ctx context.Context, c redis.Conn, lists []string, payload []byte, expire time.Duration) error {
	for _, l := range lists {
		_ = c.Send("LPUSH", l, payload)
		_ = c.Send("EXPIRE", l, int(expire/time.Second))
	}
	_, err := redis.DoContext(c, ctx, "") // flush and read every reply
	return err
}

// BRPop runs BRPOP on lists with timeout (as the server takes it: seconds, a decimal string or
// a whole number on Redis < 6), with a read timeout past wait where the connection has one. It
// returns nil when the timeout passed with nothing to pop.
func BRPop(c redis.Conn, lists []string, timeout any, wait time.Duration) ([][]byte, error) {
	args := make([]any, 0, len(lists)+1)
	for _, l := range lists {
		args = append(args, l)
	}
	args = append(args, timeout)
	var v any
	var err error
	if _, ok := c.(redis.ConnWithTimeout); ok {
		v, err = redis.DoWithTimeout(c, wait+5*time.Second, "BRPOP", args...)
	} else {
		v, err = c.Do("BRPOP", args...)
	}
	if err != nil || v == nil {
		return nil, err
	}
	return redis.ByteSlices(v, nil)
}

// DropQueue removes member from exchange's binding set and deletes lists, the queue's lists
// (kombu's queue_delete of a reply queue).
func DropQueue(c redis.Conn, k Keys, exchange, member string, lists []string) error {
	_ = c.Send("SREM", k.Binding(exchange), member)
	_ = c.Send("MULTI")
	for _, l := range lists {
		_ = c.Send("DEL", l)
	}
	_, err := c.Do("EXEC")
	return err
}
