package amqp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// Remote control and events over RabbitMQ, declared and published exactly as kombu's py-amqp
// transport does (docs/amqp-wire.md §1, §4, §5):
//
//   - exchange celery.pidbox: fanout, not durable; each worker's queue "<node>.celery.pidbox"
//     (not durable, auto-delete, exclusive from Celery 5.5 as control_queue_exclusive makes it,
//     x-expires 10 s, x-message-ttl 300 s) bound with routing key "", consumed without acks;
//   - exchange reply.celery.pidbox: direct, not durable; a client's queue
//     "<oid>.reply.celery.pidbox" (same flags and arguments) bound with routing key oid;
//   - exchange celeryev: topic, durable; events published with their routing key.
//
// Messages are JSON with content encoding utf-8 and the headers in application_headers; the
// bodies and headers come from celerycompat, which builds them as for Redis.

const (
	pidboxExchange = "celery.pidbox"
	replyExchange  = "reply.celery.pidbox"
	eventsExchange = "celeryev"
	// pidboxExpires and pidboxTTL are Celery's control_queue_expires and control_queue_ttl (ms).
	pidboxExpires = 10000
	pidboxTTL     = 300000
)

var (
	_ celerycompat.FanoutTransport = (*Transport)(nil)
	_ celerycompat.BrokerDescriber = (*Transport)(nil)
)

// Fanout returns the RabbitMQ carrier of remote control and events
// (celerycompat.FanoutTransport). It shares the Transport's connection.
func (t *Transport) Fanout() celerycompat.Fanout {
	t.fanOnce.Do(func() { t.fan = &fanout{t: t} })
	return t.fan
}

// BrokerInfo describes the connection as kombu's Connection.info() does, for the "broker"
// section of `celery inspect stats` (celerycompat.BrokerDescriber).
func (t *Transport) BrokerInfo() protocol.PyDict {
	u, err := amqp091.ParseURI(t.cfg.URL)
	if err != nil {
		return protocol.PyDict{{Key: "transport", Value: "amqp"}}
	}
	return protocol.PyDict{
		{Key: "hostname", Value: u.Host}, {Key: "userid", Value: u.Username}, {Key: "virtual_host", Value: u.Vhost},
		{Key: "port", Value: u.Port}, {Key: "insist", Value: false}, {Key: "ssl", Value: u.Scheme == "amqps"},
		{Key: "transport", Value: "amqp"}, {Key: "connect_timeout", Value: 4}, {Key: "transport_options", Value: protocol.PyDict{}},
		{Key: "login_method", Value: nil}, {Key: "uri_prefix", Value: nil}, {Key: "heartbeat", Value: t.cfg.Heartbeat.Seconds()},
		{Key: "failover_strategy", Value: "round-robin"}, {Key: "alternates", Value: []any{}},
	}
}

// fanout is Transport's celerycompat.Fanout. Publishing uses one channel of its own (without
// publisher confirms, as kombu publishes control and event messages), re-opened after a failure.
type fanout struct {
	t *Transport

	mu       sync.Mutex // guards the fields below and serializes publishing
	ch       *amqp091.Channel
	declared map[string]bool // exchanges declared on ch
}

// exclusive reports whether pidbox queues are declared exclusive: Celery 5.5 and later make them
// so (control_queue_exclusive, default True; captured on 5.7), 5.2 does not.
func (f *fanout) exclusive() bool {
	return f.t.cfg.Codec.PeerVersion.AtLeast(celerycompat.Celery55)
}

// exchangeDecl declares an exchange as Celery does: celeryev a durable topic, celery.pidbox a
// transient fanout, reply.celery.pidbox (or another reply exchange) a transient direct one.
func exchangeDecl(ch *amqp091.Channel, name string) error {
	kind, durable := "direct", false
	switch name {
	case pidboxExchange:
		kind = "fanout"
	case eventsExchange:
		kind, durable = "topic", true
	}
	if err := ch.ExchangeDeclare(name, kind, durable, false, false, false, nil); err != nil {
		return fmt.Errorf("%w: amqp declare exchange %q: %w", celerycompat.ErrBroker, name, err)
	}
	return nil
}

// pidboxArgs are the arguments of mailbox and reply queues.
func pidboxArgs() amqp091.Table {
	return amqp091.Table{"x-expires": int32(pidboxExpires), "x-message-ttl": int32(pidboxTTL)}
}

// channel returns the publishing channel, opening one when needed. Called with f.mu.
func (f *fanout) channel(ctx context.Context) (*amqp091.Channel, error) {
	if f.ch != nil && !f.ch.IsClosed() {
		return f.ch, nil
	}
	conn, err := f.t.connection(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("%w: amqp open channel: %w", celerycompat.ErrBroker, err)
	}
	f.ch, f.declared = ch, map[string]bool{}
	return ch, nil
}

// publish sends ms in order, declaring each exchange once per channel. A failure is retried once
// on a fresh channel (the first may have died with its connection).
func (f *fanout) publish(ctx context.Context, ms ...*celerycompat.FanoutMessage) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range ms {
		pub := amqp091.Publishing{
			Headers: headerTable(m.Headers), ContentType: "application/json", ContentEncoding: "utf-8",
			DeliveryMode: m.DeliveryMode, Body: m.Body,
		}
		var err error
		for attempt := 0; attempt < 2; attempt++ {
			if err = f.publishOne(ctx, m, pub); err == nil || ctx.Err() != nil {
				break
			}
			if f.ch != nil {
				_ = f.ch.Close()
				f.ch = nil
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (f *fanout) publishOne(ctx context.Context, m *celerycompat.FanoutMessage, pub amqp091.Publishing) error {
	ch, err := f.channel(ctx)
	if err != nil {
		return err
	}
	if !f.declared[m.Exchange] {
		if err := exchangeDecl(ch, m.Exchange); err != nil {
			return err
		}
		f.declared[m.Exchange] = true
	}
	if err := ch.PublishWithContext(ctx, m.Exchange, m.RoutingKey, false, false, pub); err != nil {
		return fmt.Errorf("%w: amqp publish to %q/%q: %w", celerycompat.ErrBroker, m.Exchange, m.RoutingKey, err)
	}
	return nil
}

// headerTable converts ordered headers into an AMQP table (ints as py-amqp writes them).
func headerTable(h protocol.PyDict) amqp091.Table {
	if len(h) == 0 {
		return nil
	}
	m := make(map[string]any, len(h))
	for _, it := range h {
		m[it.Key] = plain(it.Value)
	}
	return toTable(m)
}

// plain turns nested PyDicts into maps.
func plain(v any) any {
	switch x := v.(type) {
	case protocol.PyDict:
		m := make(map[string]any, len(x))
		for _, it := range x {
			m[it.Key] = plain(it.Value)
		}
		return m
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = plain(e)
		}
		return out
	}
	return v
}

// Broadcast publishes a control request to celery.pidbox.
func (f *fanout) Broadcast(ctx context.Context, m *celerycompat.FanoutMessage) error {
	return f.publish(ctx, m)
}

// Reply publishes a control reply to the client's exchange and routing key; RabbitMQ drops it
// when the client's queue is gone, as it does for a Python worker's reply.
func (f *fanout) Reply(ctx context.Context, m *celerycompat.FanoutMessage) error {
	return f.publish(ctx, m)
}

// PublishEvents publishes events in order to their exchange (celeryev).
func (f *fanout) PublishEvents(ctx context.Context, ms []*celerycompat.FanoutMessage) error {
	return f.publish(ctx, ms...)
}

// MailboxNodes is not available over AMQP 0-9-1 (a client cannot list a fanout exchange's
// queues): it returns an error wrapping errors.ErrUnsupported, and mingle greets every worker
// and waits its whole second, as Celery does.
func (f *fanout) MailboxNodes(context.Context) ([]string, error) {
	return nil, fmt.Errorf("amqp: listing the control mailbox: %w", errors.ErrUnsupported)
}

// JoinMailbox declares the node's queue, binds it to celery.pidbox and consumes it without acks,
// on a channel of its own.
func (f *fanout) JoinMailbox(ctx context.Context, node string) (celerycompat.Mailbox, error) {
	in, err := f.openInbox(ctx, pidboxExchange, node+".celery.pidbox", "")
	if err != nil {
		return nil, err
	}
	return (*mailbox)(in), nil
}

// OpenReplies declares the client's reply queue, binds it to reply.celery.pidbox with routing
// key oid and consumes it without acks.
func (f *fanout) OpenReplies(ctx context.Context, oid string) (celerycompat.ReplyInbox, error) {
	return f.openInbox(ctx, replyExchange, oid+"."+replyExchange, oid)
}

// inbox is a consumed pidbox queue (a mailbox or a reply queue) on its own channel.
type inbox struct {
	ch    *amqp091.Channel
	queue string
	dels  <-chan amqp091.Delivery
	once  sync.Once
}

func (f *fanout) openInbox(ctx context.Context, exchange, queue, key string) (*inbox, error) {
	conn, err := f.t.connection(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("%w: amqp open channel: %w", celerycompat.ErrBroker, err)
	}
	fail := func(what string, err error) (*inbox, error) {
		_ = ch.Close()
		return nil, fmt.Errorf("%w: amqp %s %q: %w", celerycompat.ErrBroker, what, queue, err)
	}
	if err := exchangeDecl(ch, exchange); err != nil {
		_ = ch.Close()
		return nil, err
	}
	if _, err := ch.QueueDeclare(queue, false, true, f.exclusive(), false, pidboxArgs()); err != nil {
		return fail("declare queue", err)
	}
	if err := ch.QueueBind(queue, key, exchange, false, nil); err != nil {
		return fail("bind queue", err)
	}
	dels, err := ch.ConsumeWithContext(ctx, queue, "", true, false, false, false, nil)
	if err != nil {
		return fail("consume", err)
	}
	return &inbox{ch: ch, queue: queue, dels: dels}, nil
}

// receive waits for one message until done fires.
func (in *inbox) receive(ctx context.Context, done <-chan time.Time) (*celerycompat.FanoutDelivery, error) {
	select {
	case d, ok := <-in.dels:
		if !ok {
			return nil, fmt.Errorf("%w: amqp: the channel of %q closed", celerycompat.ErrBroker, in.queue)
		}
		return &celerycompat.FanoutDelivery{Headers: fromTable(d.Headers), Body: d.Body}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-done:
		return nil, nil
	}
}

// Next waits up to wait for one reply (celerycompat.ReplyInbox).
func (in *inbox) Next(ctx context.Context, wait time.Duration) (*celerycompat.FanoutDelivery, error) {
	t := time.NewTimer(wait)
	defer t.Stop()
	return in.receive(ctx, t.C)
}

// Close deletes the queue and closes the channel; RabbitMQ would delete the queue anyway once its
// consumer is gone (auto-delete).
func (in *inbox) Close(context.Context) error {
	var err error
	in.once.Do(func() {
		if in.ch.IsClosed() {
			return
		}
		_, _ = in.ch.QueueDelete(in.queue, false, false, false)
		if cerr := in.ch.Close(); cerr != nil && !errors.Is(cerr, amqp091.ErrClosed) {
			err = fmt.Errorf("%w: amqp close channel: %w", celerycompat.ErrBroker, cerr)
		}
	})
	return err
}

// mailbox is an inbox receiving broadcasts (celerycompat.Mailbox).
type mailbox inbox

// Receive blocks until a request arrives, ctx ends or the channel closes.
func (m *mailbox) Receive(ctx context.Context) (*celerycompat.FanoutDelivery, error) {
	return (*inbox)(m).receive(ctx, nil)
}

// Close leaves the mailbox: the node's queue is deleted.
func (m *mailbox) Close(ctx context.Context) error { return (*inbox)(m).Close(ctx) }
