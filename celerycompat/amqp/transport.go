package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// ErrStaleDelivery is wrapped by the error of a settlement (Ack, Requeue, DeadLetter) of a
// delivery whose channel is gone (a lost connection, or a closed Consumer): the broker has taken
// the message back and delivers it again, marked redelivered, so the settlement could not be
// applied and the message is not lost.
var ErrStaleDelivery = errors.New("celerycompat/amqp: delivery's channel is gone; the broker delivers the message again")

// ErrNotHeld is wrapped by the error of a settlement (Ack, Requeue, DeadLetter) of a delivery
// this Consumer does not hold: settled already, or delivered to another Consumer. Nothing is sent
// to the broker, and retrying cannot succeed, so it does not wrap celerycompat.ErrBroker.
var ErrNotHeld = errors.New("celerycompat/amqp: delivery is not held by this consumer (settled already, or from another consumer)")

// ErrClosed is returned by the operations of a closed Transport or Consumer.
var ErrClosed = errors.New("celerycompat/amqp: closed")

// Transport is a connection to RabbitMQ implementing celerycompat.Transport: one AMQP
// connection, shared by a publisher channel in confirm mode and one channel per Consumer. It
// reconnects when the connection is lost. Safe for concurrent use.
type Transport struct {
	cfg Config
	log *slog.Logger

	// dial is held (a token in a one-slot channel, so waiting for it honours a context) while
	// dialing and while opening the publisher channel: I/O that a hung broker can stall for the
	// whole handshake deadline. Callers queue behind it no longer than their ctx allows.
	dial chan struct{}

	mu       sync.Mutex // guards the fields below; never held across I/O
	conn     *amqp091.Connection
	pub      *amqp091.Channel // confirm mode; nil until needed or after it closed
	declared map[string]bool  // queues declared on conn
	closed   bool

	// pubMu serializes what is sent on the publisher channel. amqp091 serializes publishes
	// among themselves, but a declaration (a synchronous call) sent while a publish is between
	// its frames makes RabbitMQ close the channel (505 UNEXPECTED_FRAME), and two declarations
	// at once can each take the other's reply.
	pubMu sync.Mutex

	pingMu sync.Mutex // guards ping; not mu, which a dial holds for its whole handshake
	ping   *pingCall  // the Ping round trip in progress

	fanOnce sync.Once
	fan     *fanout // remote control and events (Fanout)
}

var _ celerycompat.Transport = (*Transport)(nil)

// Dial connects to the broker at url with an otherwise default Config.
func Dial(ctx context.Context, url string) (*Transport, error) {
	return New(ctx, Config{URL: url})
}

// New connects to the broker cfg.URL names (unless cfg.Lazy). The Transport is the caller's to
// Close.
func New(ctx context.Context, cfg Config) (*Transport, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if _, err := amqp091.ParseURI(c.URL); err != nil {
		return nil, fmt.Errorf("%w: amqp: %w", celerycompat.ErrInvalidURL, err)
	}
	t := &Transport{cfg: c, log: c.Logger, declared: map[string]bool{}, dial: make(chan struct{}, 1)}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	if c.Lazy {
		return t, nil
	}
	if _, err := t.connection(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

// Codec returns the codec bodies are encoded with (celerycompat.Transport).
func (t *Transport) Codec() celerycompat.Codec { return t.cfg.Codec }

// DeadLetterQueue is the name of the queue DeadLetter puts messages in.
func (t *Transport) DeadLetterQueue() string { return t.cfg.DeadLetterQueue }

// closeTimeout bounds how long Close (of a Transport or a Consumer) waits for the broker to
// confirm: a hung broker (a paused process keeps its TCP connections open) would otherwise hold
// it until the heartbeat declares the connection dead, 2 to 3 heartbeats later.
const closeTimeout = 5 * time.Second

// Close closes the connection, waiting at most 5 s for the broker's confirmation (the connection
// is closed either way). Consumers stop; what they held un-acked goes back to the queues.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	conn := t.conn
	t.mu.Unlock()
	if conn == nil || conn.IsClosed() {
		return nil
	}
	if err := conn.CloseDeadline(time.Now().Add(closeTimeout)); err != nil && !errors.Is(err, amqp091.ErrClosed) {
		return fmt.Errorf("%w: amqp close: %w", celerycompat.ErrBroker, err)
	}
	return nil
}

// lockDial takes the dial token, or gives up when ctx ends first.
func (t *Transport) lockDial(ctx context.Context) error {
	select {
	case t.dial <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: amqp: waiting for the connection: %w", celerycompat.ErrBroker, ctx.Err())
	}
}

func (t *Transport) unlockDial() { <-t.dial }

// live returns the connection when it is open.
func (t *Transport) live() (*amqp091.Connection, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	if t.conn != nil && !t.conn.IsClosed() {
		return t.conn, nil
	}
	return nil, nil
}

// connection returns the live connection, dialing a new one when it is lost. Only one dial runs
// at once; the others wait for it within their ctx.
func (t *Transport) connection(ctx context.Context) (*amqp091.Connection, error) {
	if c, err := t.live(); c != nil || err != nil {
		return c, err
	}
	if err := t.lockDial(ctx); err != nil {
		return nil, err
	}
	defer t.unlockDial()
	if c, err := t.live(); c != nil || err != nil { // another caller dialed meanwhile
		return c, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn, err := amqp091.DialConfig(t.cfg.URL, amqp091.Config{
		Heartbeat: t.cfg.Heartbeat,
		Locale:    "en_US",
		Properties: amqp091.Table{
			"product":         "celerybridge",
			"connection_name": "celerybridge",
			"capabilities": amqp091.Table{
				"consumer_cancel_notify": true, "connection.blocked": true,
				"authentication_failure_close": true, "publisher_confirms": true,
				"basic.nack": true, "per_consumer_qos": true,
			},
		},
		Dial: func(network, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// A deadline for the AMQP handshake; amqp091 clears it once the connection is open.
			if err := c.SetDeadline(deadline); err != nil {
				_ = c.Close()
				return nil, err
			}
			return c, nil
		},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w: %w", celerycompat.ErrBroker, errDial, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed { // Close ran while this dial was on its way
		_ = conn.Close()
		return nil, ErrClosed
	}
	t.conn, t.pub, t.declared = conn, nil, map[string]bool{}
	return conn, nil
}

// publisher returns the confirm-mode publisher channel, opening it when needed.
func (t *Transport) publisher(ctx context.Context) (*amqp091.Channel, error) {
	livePub := func(conn *amqp091.Connection) *amqp091.Channel {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.conn == conn && t.pub != nil && !t.pub.IsClosed() {
			return t.pub
		}
		return nil
	}
	conn, err := t.connection(ctx)
	if err != nil {
		return nil, err
	}
	if ch := livePub(conn); ch != nil {
		return ch, nil
	}
	if err := t.lockDial(ctx); err != nil {
		return nil, err
	}
	defer t.unlockDial()
	if ch := livePub(conn); ch != nil {
		return ch, nil
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("%w: amqp open channel: %w", celerycompat.ErrBroker, err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("%w: amqp confirm.select: %w", celerycompat.ErrBroker, err)
	}
	t.mu.Lock()
	if t.conn != conn { // the connection was replaced meanwhile: this channel died with it
		t.mu.Unlock()
		_ = ch.Close()
		return nil, fmt.Errorf("%w: amqp: connection lost while opening the publisher channel", celerycompat.ErrBroker)
	}
	t.pub, t.declared = ch, map[string]bool{}
	t.mu.Unlock()
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	go func() {
		if err := <-closed; err != nil {
			t.log.Warn("amqp publisher channel closed", "error", err)
		}
	}()
	return ch, nil
}

// declare declares q on ch as Celery does: its exchange (durable), the queue (durable, with its
// arguments) and the binding. A declaration that conflicts with the broker's closes ch.
func declare(ch *amqp091.Channel, q Queue) error {
	if err := ch.ExchangeDeclare(q.Exchange, q.ExchangeType, true, false, false, false, nil); err != nil {
		return fmt.Errorf("%w: amqp declare exchange %q: %w", celerycompat.ErrBroker, q.Exchange, err)
	}
	if _, err := ch.QueueDeclare(q.Name, true, false, false, false, toTable(q.Arguments)); err != nil {
		return fmt.Errorf("%w: amqp declare queue %q: %w", celerycompat.ErrBroker, q.Name, err)
	}
	if err := ch.QueueBind(q.Name, q.RoutingKey, q.Exchange, false, nil); err != nil {
		return fmt.Errorf("%w: amqp bind queue %q: %w", celerycompat.ErrBroker, q.Name, err)
	}
	return nil
}

// declarePub declares queue name on the publisher channel once per channel. Called with pubMu.
func (t *Transport) declarePub(ch *amqp091.Channel, name string, dlq bool) error {
	t.mu.Lock()
	done := t.declared[name]
	t.mu.Unlock()
	if done {
		return nil
	}
	if dlq {
		if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
			return fmt.Errorf("%w: amqp declare dead-letter queue %q: %w", celerycompat.ErrBroker, name, err)
		}
	} else if err := declare(ch, t.cfg.queue(name)); err != nil {
		return err
	}
	t.mu.Lock()
	if t.pub == ch {
		t.declared[name] = true
	}
	t.mu.Unlock()
	return nil
}

// PublishBatch publishes msgs (celerycompat.Transport) and waits for the broker's confirms. A
// message whose exchange is "" goes to the queue its routing key names, declared first as Celery
// declares it; one with an exchange goes to that exchange, which must exist. Errors are per
// message: encoding errors, refusals (a broker nack) and messages whose channel closed before
// the confirm (the message may or may not be queued: publish again for at-least-once). So is a
// message whose ctx ended before its confirm came: AMQP has no deadline the broker checks, so
// unlike the Redis broker (celerycompat.ErrDeadlinePassed) a timeout never proves that nothing
// was queued.
func (t *Transport) PublishBatch(ctx context.Context, msgs []*celerycompat.Message) []error {
	errs := make([]error, len(msgs))
	confirms := make([]*amqp091.DeferredConfirmation, len(msgs))
	for i, m := range msgs {
		if m == nil {
			errs[i] = fmt.Errorf("%w: nil message", celerycompat.ErrEncode)
			continue
		}
		parts, err := t.cfg.Codec.EncodeParts(m)
		if err != nil {
			errs[i] = fmt.Errorf("publish %s: %w", m.ID, err)
			continue
		}
		pub := publishing(parts)
		// One retry with a fresh channel: the first try may meet a channel that died since.
		for attempt := 0; ; attempt++ {
			confirms[i], err = t.publishOne(ctx, m.DeliveryInfo.Exchange, m.DeliveryInfo.RoutingKey, pub, false)
			if err == nil || attempt == 1 || ctx.Err() != nil {
				break
			}
		}
		if err != nil {
			errs[i] = fmt.Errorf("publish %s: %w", m.ID, err)
		}
	}
	for i, dc := range confirms {
		if dc == nil {
			continue
		}
		if err := waitConfirm(ctx, dc); err != nil {
			errs[i] = fmt.Errorf("publish %s: %w", msgs[i].ID, err)
		}
	}
	return errs
}

// publishOne sends one message on the publisher channel; the confirm is waited for by the caller.
func (t *Transport) publishOne(ctx context.Context, exchange, routingKey string, pub amqp091.Publishing, dlq bool) (*amqp091.DeferredConfirmation, error) {
	if routingKey == "" && exchange == "" {
		return nil, fmt.Errorf("%w: no exchange and no routing key", celerycompat.ErrNoRoute)
	}
	ch, err := t.publisher(ctx)
	if err != nil {
		return nil, err
	}
	t.pubMu.Lock()
	defer t.pubMu.Unlock()
	if exchange == "" {
		if err := t.declarePub(ch, routingKey, dlq); err != nil {
			return nil, err
		}
	}
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, routingKey, false, false, pub)
	if err != nil {
		return nil, fmt.Errorf("%w: amqp publish to %q/%q: %w", celerycompat.ErrBroker, exchange, routingKey, err)
	}
	return dc, nil
}

// waitConfirm waits for a publisher confirm; a nack (or the channel closing first) is an error.
func waitConfirm(ctx context.Context, dc *amqp091.DeferredConfirmation) error {
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return fmt.Errorf("%w: waiting for the publisher confirm: %w", celerycompat.ErrBroker, err)
	}
	if !ok {
		return fmt.Errorf("%w: the broker did not confirm the message (nack, or the channel closed first)", celerycompat.ErrBroker)
	}
	return nil
}

// publishing is the basic.publish content for parts.
func publishing(p *protocol.Parts) amqp091.Publishing {
	return amqp091.Publishing{
		Headers:         toTable(p.Headers),
		ContentType:     p.ContentType,
		ContentEncoding: p.ContentEncoding,
		DeliveryMode:    p.DeliveryMode,
		Priority:        p.Priority,
		CorrelationId:   p.CorrelationID,
		ReplyTo:         p.ReplyTo,
		Expiration:      p.Expiration,
		Body:            p.Body,
	}
}

// partsOf is the protocol view of a received delivery.
func partsOf(d *amqp091.Delivery) *protocol.Parts {
	return &protocol.Parts{
		Headers:         fromTable(d.Headers),
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		CorrelationID:   d.CorrelationId,
		ReplyTo:         d.ReplyTo,
		Priority:        d.Priority,
		DeliveryMode:    d.DeliveryMode,
		Expiration:      d.Expiration,
		Body:            d.Body,
	}
}
