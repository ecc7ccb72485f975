package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/celerybridge/celerybridge/celerycompat"
)

// prefetchCountMax is the largest prefetch_count basic.qos carries; above it Celery (kombu's
// QoS.set) disables the limit by sending 0.
const prefetchCountMax = 0xFFFF

// Consume starts a Consumer on cfg.Queues (celerycompat.Transport): one channel, the queues
// declared as Celery declares them, basic.qos and basic.consume on each. It returns once
// consuming has started.
func (t *Transport) Consume(ctx context.Context, cfg celerycompat.ConsumerConfig) (celerycompat.Consumer, error) {
	if len(cfg.Queues) == 0 || cfg.Prefetch < 0 {
		return nil, fmt.Errorf("%w: amqp consumer needs a queue and Prefetch >= 0", celerycompat.ErrInvalidConfig)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	name := cfg.Hostname
	if name == "" {
		name = "celerybridge"
	}
	c := &consumer{
		t: t, cfg: cfg, log: log, name: name,
		queues: slices.Clone(cfg.Queues),
		in:     make(chan inbound, 64),
		kick:   make(chan struct{}, 1),
		held:   map[string]held{},
		acks:   newAcker(ackBatch(cfg.Prefetch), log),
		done:   make(chan struct{}),
		gone:   make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.WithoutCancel(ctx))
	c.opMu.Lock()
	closed, err := c.open(ctx)
	c.opMu.Unlock()
	if err != nil && t.cfg.Lazy && errors.Is(err, errDial) {
		// The broker is not there yet: the supervisor retries as after a lost channel.
		log.Warn("amqp consumer: broker unreachable; retrying", "error", err)
		lost := make(chan *amqp091.Error, 1)
		lost <- &amqp091.Error{Code: amqp091.ConnectionForced, Reason: err.Error()}
		closed, err = lost, nil
	}
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.wg.Add(1)
	go c.supervise(closed)
	return c, nil
}

// inbound is a delivery on its way from a basic.consume stream to Next.
type inbound struct {
	gen   uint64
	queue string
	d     amqp091.Delivery
}

// held is a delivery returned by Next and not yet settled.
type held struct {
	gen   uint64
	ch    *amqp091.Channel
	tag   uint64
	queue string
	d     amqp091.Delivery
}

// consumer implements celerycompat.Consumer. Background work: one forwarder per basic.consume
// stream (it ends when the stream closes) and supervise (it reopens the channel after a loss and
// applies prefetch changes). Close stops supervise, closes the channel (ending the forwarders)
// and waits for them.
type consumer struct {
	t    *Transport
	cfg  celerycompat.ConsumerConfig
	log  *slog.Logger
	name string
	in   chan inbound
	kick chan struct{} // Hold changed the prefetch
	acks *acker        // coalesces basic.ack frames (acks.go)

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	done   chan struct{} // closed by Close
	gone   chan struct{} // closed when supervise ends: Close, or the Transport closed
	once   sync.Once
	wg     sync.WaitGroup

	opMu   sync.Mutex // serializes channel-structure changes: open, SetQueues, Close
	queues []string   // guarded by opMu
	tags   map[string]string
	global bool

	mu      sync.Mutex // guards the fields below
	ch      *amqp091.Channel
	gen     uint64
	held    map[string]held
	hold    int
	applied int // prefetch_count last sent, -1 none
}

// prefetch is the prefetch_count to apply: Prefetch plus the held messages, as Celery's
// qos.increment_eventually computes it (0, no limit, stays 0).
func (c *consumer) prefetch() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.cfg.Prefetch
	if p > 0 {
		p += c.hold
	}
	if p > prefetchCountMax {
		p = 0
	}
	return p
}

// open opens a channel on the live connection and consumes c.queues on it. Called with opMu.
func (c *consumer) open(ctx context.Context) (<-chan *amqp091.Error, error) {
	conn, err := c.t.connection(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("%w: amqp open channel: %w", celerycompat.ErrBroker, err)
	}
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	fail := func(err error) (<-chan *amqp091.Error, error) {
		_ = ch.Close()
		return nil, err
	}
	c.global = true
	for _, q := range c.queues {
		if c.t.cfg.queue(q).quorum() {
			c.global = false
		}
	}
	if !c.global {
		c.log.Info("amqp: quorum queue consumed: global QoS is off and the prefetch count is static (Hold does not raise it)", "queues", c.queues)
	}
	p := c.prefetch()
	if err := ch.Qos(p, 0, c.global); err != nil {
		return fail(fmt.Errorf("%w: amqp basic.qos: %w", celerycompat.ErrBroker, err))
	}
	// The new generation and its channel are published together before the first basic.consume,
	// so that accept records every delivery of this generation with this channel.
	c.mu.Lock()
	c.gen++
	gen := c.gen
	c.ch, c.applied = ch, p
	c.mu.Unlock()
	c.acks.reset(gen, ch)
	c.tags = map[string]string{}
	for _, q := range c.queues {
		if err := c.consumeQueue(ch, gen, q); err != nil {
			return fail(err)
		}
	}
	return closed, nil
}

// consumeQueue declares q and starts basic.consume on it with a forwarder. Called with opMu.
func (c *consumer) consumeQueue(ch *amqp091.Channel, gen uint64, q string) error {
	if err := declare(ch, c.t.cfg.queue(q)); err != nil {
		return err
	}
	tag := c.name + "." + strconv.FormatUint(gen, 10) + "." + q
	deliveries, err := ch.Consume(q, tag, false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("%w: amqp basic.consume %q: %w", celerycompat.ErrBroker, q, err)
	}
	c.tags[q] = tag
	c.wg.Add(1)
	go c.forward(gen, q, deliveries)
	return nil
}

// forward passes one basic.consume stream to Next until the stream ends or the consumer closes.
func (c *consumer) forward(gen uint64, q string, deliveries <-chan amqp091.Delivery) {
	defer c.wg.Done()
	for d := range deliveries {
		select {
		case c.in <- inbound{gen: gen, queue: q, d: d}:
		case <-c.done:
			return // the channel closes: the broker takes the message back
		}
	}
}

// supervise reopens the channel after it is lost (with exponential backoff) and applies
// prefetch changes, until Close.
func (c *consumer) supervise(closed <-chan *amqp091.Error) {
	defer c.wg.Done()
	defer close(c.gone)
	for {
		select {
		case <-c.done:
			return
		case <-c.kick:
			c.applyQos()
		case err := <-closed:
			if c.ctx.Err() != nil {
				return
			}
			c.log.Warn("amqp consumer channel lost; reconnecting", "error", err)
			closed = c.reopen()
			if closed == nil {
				return
			}
		}
	}
}

// reopen retries open until it succeeds or the consumer closes (nil).
func (c *consumer) reopen() <-chan *amqp091.Error {
	delay := c.t.cfg.ReconnectMin
	for {
		select {
		case <-c.done:
			return nil
		case <-time.After(delay):
		}
		c.opMu.Lock()
		closed, err := c.open(c.ctx)
		c.opMu.Unlock()
		if err == nil {
			c.log.Info("amqp consumer reconnected", "queues", c.queues)
			return closed
		}
		if errors.Is(err, ErrClosed) {
			return nil
		}
		c.log.Warn("amqp consumer reconnect failed", "error", err, "retry_in", delay)
		delay = min(delay*2, c.t.cfg.ReconnectMax)
	}
}

// applyQos sends basic.qos when the prefetch changed. On quorum queues (per-consumer QoS) the
// prefetch stays as consuming started, as in Celery. It holds opMu: a synchronous call beside
// SetQueues' on the same channel could take its reply.
func (c *consumer) applyQos() {
	if !c.global {
		return
	}
	c.opMu.Lock()
	defer c.opMu.Unlock()
	p := c.prefetch()
	c.mu.Lock()
	ch, applied := c.ch, c.applied
	c.mu.Unlock()
	if ch == nil || p == applied {
		return
	}
	if err := ch.Qos(p, 0, true); err != nil {
		c.log.Warn("amqp basic.qos failed", "prefetch_count", p, "error", err)
		return
	}
	c.mu.Lock()
	if c.ch == ch {
		c.applied = p
	}
	c.mu.Unlock()
}

// Hold changes the number of messages held outside the prefetch window (celerycompat.Consumer);
// the new prefetch_count is sent soon after, as Celery's qos.increment_eventually is.
func (c *consumer) Hold(n int) {
	c.mu.Lock()
	c.hold = max(c.hold+n, 0)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Next returns up to max deliveries (celerycompat.Consumer): it waits for one, at most
// ConsumerConfig.IdleWait (default 1 s; then it returns none), then takes what else has arrived,
// up to max. Deliveries that arrived on a channel lost since are
// skipped: the broker has taken them back and delivers them again. A lost connection is not an
// error of Next: it waits while the consumer reconnects. It returns ErrClosed once the consumer
// or its Transport is closed.
func (c *consumer) Next(ctx context.Context, max int) ([]*celerycompat.Delivery, error) {
	if max < 1 {
		return nil, fmt.Errorf("%w: Next needs max >= 1", celerycompat.ErrInvalidConfig)
	}
	out := c.drain(nil, max)
	if len(out) > 0 {
		return out, nil
	}
	// Nothing buffered: wait, at most IdleWait. (A busy worker never gets here, and so makes
	// no timer per call.)
	idle := c.cfg.IdleWait
	if idle <= 0 {
		idle = time.Second
	}
	lapse := time.NewTimer(idle)
	defer lapse.Stop()
	for len(out) == 0 {
		select {
		case in := <-c.in:
			if d := c.accept(in); d != nil {
				out = append(out, d)
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.gone:
			return nil, ErrClosed
		case <-lapse.C:
			// Nothing for a while: return, as the Consumer contract says, so that the worker's
			// window can move (an ETA task whose time came needs the slot this call holds).
			return nil, nil
		}
	}
	return c.drain(out, max), nil
}

// drain appends to out what has arrived already, without waiting, up to max in all.
func (c *consumer) drain(out []*celerycompat.Delivery, max int) []*celerycompat.Delivery {
	for len(out) < max {
		select {
		case in := <-c.in:
			if d := c.accept(in); d != nil {
				out = append(out, d)
			}
		default:
			return out
		}
	}
	return out
}

// accept records in as held and decodes it; nil when its channel is gone.
func (c *consumer) accept(in inbound) *celerycompat.Delivery {
	tag := strconv.FormatUint(in.gen, 10) + "." + strconv.FormatUint(in.d.DeliveryTag, 10)
	c.mu.Lock()
	if in.gen != c.gen {
		c.mu.Unlock()
		return nil
	}
	c.held[tag] = held{gen: in.gen, ch: c.ch, tag: in.d.DeliveryTag, queue: in.queue, d: in.d}
	c.mu.Unlock()
	rk := in.d.RoutingKey
	if rk == "" {
		rk = in.queue
	}
	m, env, err := c.t.cfg.Codec.DecodeParts(partsOf(&in.d), in.d.Exchange, rk, tag, in.d.Redelivered)
	if m != nil {
		m.DeliveryInfo.Redelivered = in.d.Redelivered
	}
	return &celerycompat.Delivery{Raw: env, List: in.queue, Queue: in.queue, Tag: tag, Message: m, DecodeErr: err}
}

// take removes d from the held set and returns its channel, or an error saying why it cannot be
// settled.
func (c *consumer) take(d *celerycompat.Delivery) (held, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.held[d.Tag]
	if !ok {
		return h, fmt.Errorf("settle %s: %w", d.Tag, ErrNotHeld)
	}
	delete(c.held, d.Tag)
	if h.gen != c.gen || h.ch.IsClosed() {
		return h, fmt.Errorf("settle %s: %w", d.Tag, ErrStaleDelivery)
	}
	return h, nil
}

// settle takes d from the held set and applies op (basic.ack or basic.reject) through send.
func (c *consumer) settle(d *celerycompat.Delivery, op string, send func(h held) error) error {
	h, err := c.take(d)
	if err != nil {
		return err
	}
	if err := send(h); err != nil {
		return fmt.Errorf("%s %s: %w", op, d.Tag, err)
	}
	return nil
}

// Ack is basic.ack (celerycompat.Consumer). Acks that come close together are coalesced into one
// basic.ack with multiple=true, sent within a few milliseconds (acks.go); a crash before it is sent
// makes the broker redeliver those messages, as a crash before the ack would.
func (c *consumer) Ack(_ context.Context, d *celerycompat.Delivery) error {
	return c.settle(d, "basic.ack", func(h held) error { return c.acks.ack(h.gen, h.tag) })
}

// Requeue is basic.reject with requeue (celerycompat.Consumer). RabbitMQ puts the message back
// at its old position where it can, so back is not honoured: AMQP has no way to requeue at the
// tail.
func (c *consumer) Requeue(_ context.Context, d *celerycompat.Delivery, _ bool) error {
	return c.settle(d, "basic.reject", func(h held) error {
		return c.acks.settle(h.gen, h.tag, func() error { return h.ch.Reject(h.tag, true) })
	})
}

// DeadLetter publishes the message, as it was delivered, to the dead-letter queue with headers
// x-deadletter-reason, -queue, -exchange, -routing-key and -time, waits for the broker's
// confirm, and only then acks it (celerycompat.Consumer): a crash in between leaves the message
// in both places, never in neither.
func (c *consumer) DeadLetter(ctx context.Context, d *celerycompat.Delivery, reason string) error {
	c.mu.Lock()
	h, ok := c.held[d.Tag]
	stale := ok && (h.gen != c.gen || h.ch.IsClosed())
	if stale {
		delete(c.held, d.Tag)
	}
	c.mu.Unlock()
	switch {
	case !ok:
		return fmt.Errorf("dead-letter %s: %w", d.Tag, ErrNotHeld)
	case stale: // the broker delivers it again: dead-letter that delivery, not this one
		return fmt.Errorf("dead-letter %s: %w", d.Tag, ErrStaleDelivery)
	}
	pub := amqp091.Publishing{
		Headers:         amqp091.Table{},
		ContentType:     h.d.ContentType,
		ContentEncoding: h.d.ContentEncoding,
		DeliveryMode:    amqp091.Persistent,
		Priority:        h.d.Priority,
		CorrelationId:   h.d.CorrelationId,
		ReplyTo:         h.d.ReplyTo,
		MessageId:       h.d.MessageId,
		Timestamp:       h.d.Timestamp,
		Type:            h.d.Type,
		UserId:          "",
		AppId:           h.d.AppId,
		Body:            h.d.Body,
	}
	for k, v := range h.d.Headers {
		pub.Headers[k] = v
	}
	pub.Headers["x-deadletter-reason"] = reason
	pub.Headers["x-deadletter-queue"] = h.queue
	pub.Headers["x-deadletter-exchange"] = h.d.Exchange
	pub.Headers["x-deadletter-routing-key"] = h.d.RoutingKey
	pub.Headers["x-deadletter-time"] = time.Now().UTC().Format(time.RFC3339Nano)
	dc, err := c.t.publishOne(ctx, "", c.t.cfg.DeadLetterQueue, pub, true)
	if err == nil {
		err = waitConfirm(ctx, dc)
	}
	if err != nil {
		return fmt.Errorf("dead-letter %s: %w (the message stays held: settle it again)", d.Tag, err)
	}
	if err := c.Ack(ctx, d); err != nil {
		return fmt.Errorf("dead-letter %s: in the dead-letter queue, but %w", d.Tag, err)
	}
	return nil
}

// SetQueues consumes queues from now on (celerycompat.Consumer): basic.consume on the new ones,
// basic.cancel on the removed ones, returning after each cancel-ok. An empty list consumes
// nothing until queues are added, as on Redis (cancel_consumer of the last queue).
func (c *consumer) SetQueues(ctx context.Context, queues []string) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	c.mu.Lock()
	ch, gen := c.ch, c.gen
	c.mu.Unlock()
	old := c.queues
	c.queues = slices.Clone(queues)
	if ch == nil || ch.IsClosed() {
		return nil // the reconnect consumes the new set
	}
	for _, q := range old {
		if !slices.Contains(queues, q) {
			if err := ch.Cancel(c.tags[q], false); err != nil {
				return fmt.Errorf("%w: amqp basic.cancel %q: %w", celerycompat.ErrBroker, q, err)
			}
			delete(c.tags, q)
		}
	}
	for _, q := range queues {
		if !slices.Contains(old, q) {
			if err := c.consumeQueue(ch, gen, q); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}

// Close stops consuming (celerycompat.Consumer): the channel closes and the broker takes back
// every delivery not settled. It waits for the broker's confirmation until ctx ends, and at most
// 5 s (then the channel goes when the Transport closes).
func (c *consumer) Close(ctx context.Context) error {
	c.once.Do(func() {
		c.cancel()
		close(c.done)
		// On a hung broker the channel's close waits for a close-ok until the connection dies;
		// Close waits for it only as long as below.
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.acks.close() // the pending acks go out before the channel closes
			c.opMu.Lock()
			defer c.opMu.Unlock()
			c.mu.Lock()
			ch := c.ch
			c.mu.Unlock()
			if ch != nil {
				_ = ch.Close()
			}
		}()
	})
	wait := make(chan struct{})
	go func() { c.wg.Wait(); close(wait) }()
	t := time.NewTimer(closeTimeout)
	defer t.Stop()
	select {
	case <-wait:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("%w: amqp: the broker did not confirm the consumer's close within %v", celerycompat.ErrBroker, closeTimeout)
	}
}
