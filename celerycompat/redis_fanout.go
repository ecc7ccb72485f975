package celerycompat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat/internal/rdb"

	"github.com/gomodule/redigo/redis"
)

// Remote control and events over Redis, as kombu's Redis transport carries them: every message
// travels inside a kombu JSON envelope (base64 body, headers, delivery_info). Broadcasts (pidbox
// requests, events) are PUBLISHed on the exchange's fanout channel "/<db>.<exchange>/<routing
// key>", which workers and monitors PSUBSCRIBE; replies are LPUSHed to the lists of the queues
// bound to reply.celery.pidbox with the client's oid, found through the exchange's binding set.

// Fanout returns the Redis carrier of remote control and events (FanoutTransport).
func (b *Broker) Fanout() Fanout { return redisFanout{b} }

var _ FanoutTransport = (*Broker)(nil)

// redisFanout is *Broker's Fanout.
type redisFanout struct{ b *Broker }

// replyQueueExpires is kombu's reply_queue_expires (seconds): a reply list unused this long goes.
const replyQueueExpires = 10

// JoinMailbox adds node's queue to celery.pidbox's binding set and PSUBSCRIBEs the exchange's
// channel on a connection of its own, returning once the subscription is confirmed.
func (f redisFanout) JoinMailbox(ctx context.Context, node string) (Mailbox, error) {
	keys := f.b.Keys()
	member := BindingMember("", "", pidboxQueue(node))
	conn, err := f.b.conn(ctx)
	if err != nil {
		return nil, err
	}
	if err := rdb.Bind(ctx, conn, keys, pidboxExchange, member); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: bind mailbox: %w", ErrBroker, err)
	}
	psc := redis.PubSubConn{Conn: conn}
	patterns := []string{keys.Fanout(pidboxExchange, "")}
	if f.b.cfg.SentinelFanoutCompat {
		patterns = append(patterns, keys.LegacyFanout(pidboxExchange, ""))
	}
	if err := rdb.PSubscribe(psc, patterns...); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: subscribe mailbox: %w", ErrBroker, err)
	}
	m := &redisMailbox{
		f: f, member: member, psc: psc, dedup: f.b.cfg.SentinelFanoutCompat,
		msgs: make(chan []byte), errc: make(chan error, 1),
		quit: make(chan struct{}), readerDone: make(chan struct{}), pingerDone: make(chan struct{}),
	}
	first := psc.ReceiveWithTimeout(10 * time.Second)
	if err, ok := first.(error); ok && strings.Contains(err.Error(), "does not support") {
		first = psc.Receive() // a connection without per-call timeouts
	}
	switch v := first.(type) {
	case redis.Subscription:
	case error:
		conn.Close()
		return nil, fmt.Errorf("%w: subscribe mailbox: %w", ErrBroker, v)
	default:
		conn.Close()
		return nil, fmt.Errorf("%w: subscribe mailbox: unexpected reply %T", ErrBroker, v)
	}
	go m.read()
	go m.ping()
	return m, nil
}

// redisMailbox reads one PubSub connection. Its pinger owns the write side (PING to detect a dead
// connection, PUNSUBSCRIBE to stop); its reader hands messages to Receive.
type redisMailbox struct {
	f      redisFanout
	member string
	psc    redis.PubSubConn

	msgs       chan []byte
	errc       chan error // the reader's terminal error
	quit       chan struct{}
	readerDone chan struct{}
	pingerDone chan struct{}
	closeOnce  sync.Once

	// dedup drops a request that arrives a second time, on the other of the two channels
	// (SentinelFanoutCompat); seen holds the last delivery tags, oldest first.
	dedup bool
	seen  []string
}

// fanoutDedupSize is how many delivery tags the mailbox remembers (kombu's is 1000).
const fanoutDedupSize = 1000

// duplicate reports whether raw's delivery tag was seen already, remembering it if not. Only
// the reader calls it. Envelopes without a tag are never duplicates, as in kombu.
func (m *redisMailbox) duplicate(raw []byte) bool {
	var env struct {
		Properties struct {
			DeliveryTag string `json:"delivery_tag"`
		} `json:"properties"`
	}
	if json.Unmarshal(raw, &env) != nil || env.Properties.DeliveryTag == "" {
		return false
	}
	tag := env.Properties.DeliveryTag
	if slices.Contains(m.seen, tag) {
		return true
	}
	if len(m.seen) == fanoutDedupSize {
		m.seen = m.seen[1:]
	}
	m.seen = append(m.seen, tag)
	return false
}

func (m *redisMailbox) read() {
	defer close(m.readerDone)
	timeouts := true
	for {
		var v any
		if timeouts {
			v = m.psc.ReceiveWithTimeout(3 * pidboxPing)
		} else {
			v = m.psc.Receive()
		}
		switch x := v.(type) {
		case redis.Message:
			if m.dedup && m.duplicate(x.Data) {
				continue
			}
			select {
			case m.msgs <- x.Data:
			case <-m.quit:
				return
			}
		case redis.Subscription:
			if x.Kind == "punsubscribe" && x.Count == 0 {
				return
			}
		case error:
			if timeouts && strings.Contains(x.Error(), "does not support") {
				timeouts = false
				continue
			}
			m.errc <- fmt.Errorf("%w: mailbox: %w", ErrBroker, x)
			return
		}
	}
}

func (m *redisMailbox) ping() {
	defer close(m.pingerDone)
	t := time.NewTicker(pidboxPing)
	defer t.Stop()
	for {
		select {
		case <-m.quit:
			_ = rdb.PUnsubscribe(m.psc)
			return
		case <-m.readerDone:
			return
		case <-t.C:
			if rdb.PingPubSub(m.psc) != nil {
				return
			}
		}
	}
}

// Receive returns the next broadcast. An envelope that cannot be read gives a *DecodeError and
// leaves the mailbox usable.
func (m *redisMailbox) Receive(ctx context.Context) (*FanoutDelivery, error) {
	select {
	case raw := <-m.msgs:
		env, err := decodeFanoutEnvelope(raw)
		if err != nil {
			return nil, &DecodeError{Field: "envelope", Err: err}
		}
		return env.delivery(), nil
	case err := <-m.errc:
		m.errc <- err // every later Receive fails too
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close unsubscribes, closes the connection and removes the node from the binding set, as a
// Celery worker leaves the mailbox at shutdown.
func (m *redisMailbox) Close(ctx context.Context) error {
	var err error
	m.closeOnce.Do(func() {
		close(m.quit)
		<-m.pingerDone
		t := time.NewTimer(3 * pidboxPing)
		select {
		case <-m.readerDone:
		case <-t.C:
		}
		t.Stop()
		m.psc.Conn.Close() // unblocks a reader that never saw the PUNSUBSCRIBE
		<-m.readerDone
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		c, cerr := m.f.b.conn(ctx)
		if cerr != nil {
			err = cerr
			return
		}
		defer c.Close()
		if cerr := rdb.Unbind(ctx, c, m.f.b.Keys(), pidboxExchange, m.member); cerr != nil {
			err = fmt.Errorf("%w: leave mailbox: %w", ErrBroker, cerr)
		}
	})
	return err
}

// MailboxNodes lists the nodes in celery.pidbox's binding set ("<node>.celery.pidbox" queues).
func (f redisFanout) MailboxNodes(ctx context.Context) ([]string, error) {
	c, err := f.b.conn(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	members, err := rdb.BindingsContext(ctx, c, f.b.Keys(), pidboxExchange)
	if err != nil {
		return nil, fmt.Errorf("%w: list mailbox: %w", ErrBroker, err)
	}
	var nodes []string
	for _, m := range members {
		parts := strings.Split(m, sep)
		if node, ok := strings.CutSuffix(parts[len(parts)-1], ".celery.pidbox"); ok && node != "" {
			nodes = append(nodes, node)
		}
	}
	return nodes, nil
}

// Broadcast PUBLISHes m's envelope on its exchange's fanout channel (both names with
// SentinelFanoutCompat).
func (f redisFanout) Broadcast(ctx context.Context, m *FanoutMessage) error {
	env, err := appendFanoutEnvelope(nil, m.Body, m.Headers, int(m.DeliveryMode), m.Exchange, m.RoutingKey, m.Markers)
	if err != nil {
		return err
	}
	c, err := f.b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	chans := f.channels(m)
	if err := rdb.PublishMany(c, len(chans), func(i int) (string, []byte, error) { return chans[i], env, nil }); err != nil {
		return fmt.Errorf("%w: publish to %s: %w", ErrBroker, m.Exchange, err)
	}
	return nil
}

// channels are the fanout channels m is published on: its exchange's, and with
// SentinelFanoutCompat also the one kombu before 5.4 uses on Sentinel.
func (f redisFanout) channels(m *FanoutMessage) []string {
	keys := f.b.Keys()
	chans := []string{keys.Fanout(m.Exchange, m.RoutingKey)}
	if f.b.cfg.SentinelFanoutCompat {
		chans = append(chans, keys.LegacyFanout(m.Exchange, m.RoutingKey))
	}
	return chans
}

// Reply LPUSHes m's envelope to the lists of the queues bound to m's exchange with its routing
// key, as kombu's direct exchange routes; a client that bound nothing gets its conventional queue
// "<routing_key>.reply.celery.pidbox". Each push renews a 10 s expiry (kombu's
// reply_queue_expires), so that a reply arriving after its client left does not stay in Redis.
func (f redisFanout) Reply(ctx context.Context, m *FanoutMessage) error {
	env, err := appendFanoutEnvelope(nil, m.Body, m.Headers, int(m.DeliveryMode), m.Exchange, m.RoutingKey, m.Markers)
	if err != nil {
		return err
	}
	c, err := f.b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	keys := f.b.Keys()
	members, err := rdb.BindingsContext(ctx, c, keys, m.Exchange)
	if err != nil {
		return fmt.Errorf("%w: read reply bindings: %w", ErrBroker, err)
	}
	var lists []string
	for _, b := range members {
		if parts := strings.SplitN(b, sep, 3); len(parts) == 3 && parts[0] == m.RoutingKey {
			lists = append(lists, keys.Queue(parts[2], 0))
		}
	}
	if len(lists) == 0 {
		lists = []string{keys.Queue(replyQueue(m.RoutingKey), 0)}
	}
	if err := rdb.PushReply(ctx, c, lists, env, replyQueueExpires*time.Second); err != nil {
		return fmt.Errorf("%w: send reply: %w", ErrBroker, err)
	}
	return nil
}

// PublishEvents PUBLISHes every event's envelope in one pipeline.
func (f redisFanout) PublishEvents(ctx context.Context, ms []*FanoutMessage) error {
	if len(ms) == 0 {
		return nil
	}
	c, err := f.b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	var env []byte
	var encErr error
	per := 1
	if f.b.cfg.SentinelFanoutCompat {
		per = 2 // the same envelope on both channels
	}
	err = rdb.PublishMany(c, per*len(ms), func(i int) (string, []byte, error) {
		m := ms[i/per]
		if i%per == 0 {
			env, encErr = appendFanoutEnvelope(env[:0], m.Body, m.Headers, int(m.DeliveryMode), m.Exchange, m.RoutingKey, m.Markers)
		}
		return f.channels(m)[i%per], env, encErr
	})
	if encErr != nil {
		return encErr
	}
	if err != nil {
		return fmt.Errorf("%w: publish events: %w", ErrBroker, err)
	}
	return nil
}

// OpenReplies binds the reply queue "<oid>.reply.celery.pidbox" to reply.celery.pidbox (kombu's
// maybe_declare of the reply queue) and keeps a connection for BRPOP on its lists.
func (f redisFanout) OpenReplies(ctx context.Context, oid string) (ReplyInbox, error) {
	conn, err := f.b.conn(ctx)
	if err != nil {
		return nil, err
	}
	member := BindingMember(oid, "", replyQueue(oid))
	if err := rdb.Bind(ctx, conn, f.b.Keys(), pidboxReplyExchange, member); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: bind reply queue: %w", ErrBroker, err)
	}
	keys := f.b.Keys()
	lists := make([]string, 0, len(prioritySteps))
	for _, s := range prioritySteps {
		lists = append(lists, keys.Queue(replyQueue(oid), s))
	}
	return &redisReplies{f: f, oid: oid, member: member, conn: conn, lists: lists}, nil
}

// redisReplies pops a client's reply lists.
type redisReplies struct {
	f           redisFanout
	oid, member string
	conn        redis.Conn
	lists       []string // the reply queue's lists, priority steps in order
	intTimeout  bool     // Redis < 6 takes whole seconds only
}

// Next BRPOPs one reply for up to wait. An envelope that cannot be read gives a *DecodeError.
func (r *redisReplies) Next(ctx context.Context, wait time.Duration) (*FanoutDelivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, max(time.Until(dl), time.Millisecond))
	}
	for {
		var timeout any = strconv.FormatFloat(max(wait.Seconds(), 0.001), 'f', 3, 64)
		if r.intTimeout {
			timeout = int(math.Ceil(wait.Seconds()))
		}
		pair, err := rdb.BRPop(r.conn, r.lists, timeout, wait)
		if err != nil && !r.intTimeout && strings.Contains(err.Error(), "timeout is not") {
			r.intTimeout = true
			continue
		}
		if errors.Is(err, redis.ErrNil) || (err == nil && pair == nil) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: collect replies: %w", ErrBroker, err)
		}
		if len(pair) != 2 {
			return nil, &DecodeError{Field: "reply", Err: fmt.Errorf("BRPOP gave %d items", len(pair))}
		}
		env, err := decodeFanoutEnvelope(pair[1])
		if err != nil {
			return nil, &DecodeError{Field: "envelope", Err: err}
		}
		return env.delivery(), nil
	}
}

// Close removes the reply queue's binding and lists (kombu's after_reply_message_received).
func (r *redisReplies) Close(ctx context.Context) error {
	r.conn.Close()
	conn, err := r.f.b.conn(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := rdb.DropQueue(conn, r.f.b.Keys(), pidboxReplyExchange, r.member, r.lists); err != nil {
		return fmt.Errorf("%w: remove reply queue %s: %w", ErrBroker, replyQueue(r.oid), err)
	}
	return nil
}
