package celerycompat

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat/internal/rdb"

	"github.com/gomodule/redigo/redis"
)

// errBackendClosed is returned by waits interrupted by Backend.Close.
var errBackendClosed = fmt.Errorf("%w: closed", errBackendRedis)

// Reconnect backoff of the pub/sub connection.
const (
	consumerMinBackoff = 25 * time.Millisecond
	consumerMaxBackoff = time.Second
	// subscribeBatch bounds the channels named in one SUBSCRIBE when re-subscribing.
	subscribeBatch = 512
)

// resultConsumer multiplexes the waits of every AsyncResult of one Backend over a single pub/sub
// connection, like Celery's ResultConsumer: a channel (the result key) is SUBSCRIBEd while at
// least one waiter wants it and UNSUBSCRIBEd when the last one leaves.
//
// A waiter is told to (re)read the key each time its subscription becomes active: after the
// server acknowledged the SUBSCRIBE (so no PUBLISH after that read can be missed), and again after
// every reconnect and re-subscribe (the state may have changed while the connection was down).
// Published values are queued to every waiter of the channel.
//
// One goroutine (run) owns reading: it connects, re-subscribes, receives, and reconnects with
// backoff after an error until close. Writers (SUBSCRIBE/UNSUBSCRIBE) hold mu, which also guards
// all state. Shutdown: close cancels ctx, which aborts the blocking receive; run closes the
// connection and exits; close waits for it.
type resultConsumer struct {
	pool   Pool
	log    *slog.Logger
	ctx    context.Context // cancelled by close
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns

	mu       sync.Mutex
	started  bool
	conn     redis.Conn // the pub/sub connection; nil while disconnected
	channels map[string]*subState
}

// subState is one channel's subscription on the current connection.
type subState struct {
	waiters    map[*resultWaiter]struct{}
	subscribed bool // the last command sent for it on conn was SUBSCRIBE
	pending    int  // SUBSCRIBEs sent on conn whose acknowledgement has not arrived
}

func (s *subState) active() bool { return s.subscribed && s.pending == 0 }

// resultWaiter receives a channel's events for one wait.
type resultWaiter struct {
	channel string
	sig     chan struct{} // capacity 1: "something arrived"

	mu     sync.Mutex
	msgs   [][]byte // published values, oldest first
	resync bool     // the subscription became active: read the key
}

func (w *resultWaiter) notify(msg []byte, resync bool) {
	w.mu.Lock()
	if msg != nil {
		w.msgs = append(w.msgs, msg)
	}
	w.resync = w.resync || resync
	w.mu.Unlock()
	select {
	case w.sig <- struct{}{}:
	default:
	}
}

// take returns and clears what arrived.
func (w *resultWaiter) take() (msgs [][]byte, resync bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	msgs, resync = w.msgs, w.resync
	w.msgs, w.resync = nil, false
	return msgs, resync
}

func newResultConsumer(pool Pool, log *slog.Logger) *resultConsumer {
	ctx, cancel := context.WithCancel(context.Background())
	return &resultConsumer{pool: pool, log: log, ctx: ctx, cancel: cancel,
		done: make(chan struct{}), channels: map[string]*subState{}}
}

// subscribe registers a waiter for channel, starting the consumer on first use.
func (c *resultConsumer) subscribe(channel string) (*resultWaiter, error) {
	w := &resultWaiter{channel: channel, sig: make(chan struct{}, 1)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx.Err() != nil {
		return nil, errBackendClosed
	}
	if !c.started {
		c.started = true
		go c.run()
	}
	st := c.channels[channel]
	if st == nil {
		st = &subState{waiters: map[*resultWaiter]struct{}{}}
		c.channels[channel] = st
	}
	st.waiters[w] = struct{}{}
	switch {
	case st.active():
		w.notify(nil, true)
	case !st.subscribed && c.conn != nil:
		st.subscribed = true
		st.pending++
		if err := rdb.Subscribe(c.conn, []string{channel}, 1); err != nil {
			// The reader sees the broken connection too, reconnects and re-subscribes.
			c.log.Debug("result pub/sub subscribe failed", "channel", channel, "err", err)
		}
	}
	return w, nil
}

// unsubscribe removes w; the channel is unsubscribed when its last waiter leaves.
func (c *resultConsumer) unsubscribe(w *resultWaiter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.channels[w.channel]
	if st == nil {
		return
	}
	delete(st.waiters, w)
	if len(st.waiters) > 0 {
		return
	}
	if st.subscribed && c.conn != nil {
		st.subscribed = false
		if err := rdb.Unsubscribe(c.conn, w.channel); err != nil {
			c.log.Debug("result pub/sub unsubscribe failed", "channel", w.channel, "err", err)
		}
	}
	if st.pending == 0 {
		delete(c.channels, w.channel)
	}
}

func (c *resultConsumer) close() {
	c.cancel()
	c.mu.Lock()
	started := c.started
	c.mu.Unlock()
	if started {
		<-c.done
	}
}

func (c *resultConsumer) run() {
	defer close(c.done)
	var backoff time.Duration
	var lastLog time.Time
	for c.ctx.Err() == nil {
		healthy := false
		conn, err := c.pool.GetContext(c.ctx)
		if err == nil {
			if err = c.attach(conn); err == nil {
				healthy, err = c.read(conn)
			}
			c.detach()
			conn.Close()
		}
		if c.ctx.Err() != nil {
			return
		}
		if healthy {
			backoff = 0
		}
		backoff = min(max(2*backoff, consumerMinBackoff), consumerMaxBackoff)
		if time.Since(lastLog) > 10*time.Second { // rate-limit repeated failures
			lastLog = time.Now()
			c.log.Warn("result pub/sub connection lost; reconnecting", "err", err, "retry_in", backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
			return
		}
	}
}

// attach makes conn the pub/sub connection and subscribes every channel that has waiters.
func (c *resultConsumer) attach(conn redis.Conn) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = conn
	chans := make([]string, 0, len(c.channels))
	for ch, st := range c.channels {
		st.subscribed, st.pending = true, 1
		chans = append(chans, ch)
	}
	return rdb.Subscribe(conn, chans, subscribeBatch)
}

// detach forgets the connection: nothing is subscribed any more; channels without waiters go.
func (c *resultConsumer) detach() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = nil
	for ch, st := range c.channels {
		st.subscribed, st.pending = false, 0
		if len(st.waiters) == 0 {
			delete(c.channels, ch)
		}
	}
}

// read receives until the connection fails or ctx is cancelled. healthy reports that at least
// one reply arrived (the connection worked).
func (c *resultConsumer) read(conn redis.Conn) (healthy bool, err error) {
	psc := redis.PubSubConn{Conn: conn}
	for {
		switch v := psc.ReceiveContext(c.ctx).(type) {
		case redis.Message:
			healthy = true
			c.dispatch(v.Channel, v.Data)
		case redis.Subscription:
			healthy = true
			if v.Kind == "subscribe" {
				c.acknowledged(v.Channel)
			}
		case redis.Pong:
			healthy = true
		case error:
			return healthy, v
		}
	}
}

func (c *resultConsumer) dispatch(channel string, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.channels[channel]; st != nil {
		for w := range st.waiters {
			w.notify(data, false)
		}
	}
}

// acknowledged handles the server's reply to one SUBSCRIBE of channel.
func (c *resultConsumer) acknowledged(channel string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.channels[channel]
	if st == nil {
		return
	}
	if st.pending > 0 {
		st.pending--
	}
	if st.active() {
		for w := range st.waiters {
			w.notify(nil, true)
		}
	}
	if st.pending == 0 && len(st.waiters) == 0 && !st.subscribed {
		delete(c.channels, channel)
	}
}

// subscriptions reports how many channels are subscribed and acknowledged (for tests).
func (c *resultConsumer) subscriptions() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, st := range c.channels {
		if st.active() {
			n++
		}
	}
	return n
}
