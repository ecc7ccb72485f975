package gocelery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/celerybridge/celerybridge/celerycompat"
	celeryamqp "github.com/celerybridge/celerybridge/celerycompat/amqp"
)

// AMQPExchange is the exchange an AMQPCeleryBroker's queue is bound to.
type AMQPExchange struct {
	Name       string
	Type       string
	Durable    bool
	AutoDelete bool
}

// NewAMQPExchange returns a direct exchange named name, declared as Celery declares its
// exchanges: durable, not auto-deleted. (gocelery made it auto-deleted, which RabbitMQ refuses
// with PRECONDITION_FAILED when Celery has declared the same exchange; see the package doc.)
func NewAMQPExchange(name string) *AMQPExchange {
	return &AMQPExchange{Name: name, Type: "direct", Durable: true, AutoDelete: false}
}

// AMQPQueue is the queue an AMQPCeleryBroker sends tasks to and serves.
type AMQPQueue struct {
	Name       string
	Durable    bool
	AutoDelete bool
}

// NewAMQPQueue returns a durable queue named name that is not auto-deleted, as Celery declares
// its task queues.
func NewAMQPQueue(name string) *AMQPQueue {
	return &AMQPQueue{Name: name, Durable: true, AutoDelete: false}
}

// AMQPCeleryBroker is a Celery broker on RabbitMQ: kombu's py-amqp transport as
// celerycompat/amqp implements it. Delay publishes through celerycompat's producer (Celery's
// wire: default exchange, routing key = queue, protocol 2, persistent, publisher confirms) and
// CeleryWorker runs celerycompat.Worker on it (acknowledged after the result is stored,
// redelivered after a crash, undecodable and unregistered messages dead-lettered).
//
// The engine opens a connection of its own, to the broker, vhost and user of Connection (or
// of the URL given to NewAMQPCeleryBroker), on first use: the transport reconnects by itself,
// which a caller's connection cannot. Channel and Connection are kept for the program's own
// use and for CreateExchange and CreateQueue; this package never closes them. It is safe for
// concurrent use once its fields are set.
type AMQPCeleryBroker struct {
	*amqp.Channel
	// Connection is the connection Channel belongs to.
	Connection *amqp.Connection
	// Exchange is the exchange Queue is bound to (NewAMQPExchange("celery") by the constructors,
	// Celery's default). Only durable, not auto-deleted exchanges are accepted.
	Exchange *AMQPExchange
	// Queue is where tasks are sent and served from (NewAMQPQueue("celery")). Only durable,
	// not auto-deleted queues are accepted.
	Queue *AMQPQueue
	// Rate is the prefetch count of the consumer GetTaskMessage reads from (4 by the
	// constructors). CeleryWorker's prefetch follows its numWorkers instead.
	Rate int
	// Protocol is the task message protocol Delay writes: 2 (the default) or 1.
	Protocol int
	// URL is the broker URL the engine connects to (set by NewAMQPCeleryBroker). A broker built
	// by NewAMQPCeleryBrokerByConnAndChannel needs it set when Connection's credentials cannot
	// be read back (amqp091-go erases them from an open connection): the engine opens its own
	// connection, and celerycompat/amqp cannot run on a caller's connection.
	URL string

	dialErr error // why NewAMQPCeleryBroker could not connect

	mu        sync.Mutex // guards the engine fields below
	transport *celeryamqp.Transport
	producer  *celerycompat.Producer
	consumer  celerycompat.Consumer // GetTaskMessage's, started by StartConsumingChannel
}

// NewAMQPConnection connects to the broker at host (an amqp:// or amqps:// URL) and opens a
// channel. gocelery panicked when that failed; this returns (nil, nil) instead, because the
// signature has no error: use NewAMQPConnectionContext to learn why.
func NewAMQPConnection(host string) (*amqp.Connection, *amqp.Channel) {
	conn, ch, err := NewAMQPConnectionContext(context.Background(), host)
	if err != nil {
		return nil, nil
	}
	return conn, ch
}

// NewAMQPConnectionContext connects to the broker at host and opens a channel, returning the
// error when it cannot. The caller owns both and closes the connection.
func NewAMQPConnectionContext(ctx context.Context, host string) (*amqp.Connection, *amqp.Channel, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn, err := amqp.DialConfig(host, amqp.Config{
		Heartbeat: 60 * time.Second,
		Locale:    "en_US",
		Dial: func(network, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if err := c.SetDeadline(deadline); err != nil { // cleared once the connection is open
				_ = c.Close()
				return nil, err
			}
			return c, nil
		},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("gocelery: connect to %s: %w", redactURL(host), err)
	}
	ch, err := conn.Channel()
	if err != nil {
		_ = conn.Close()
		return nil, nil, fmt.Errorf("gocelery: open channel: %w", err)
	}
	return conn, ch, nil
}

// redactURL hides the password of an AMQP URL for error messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "the broker"
	}
	return u.Redacted()
}

// NewAMQPCeleryBroker connects to the broker at host and returns a broker for queue "celery".
// When the connection fails, the broker's methods (and Delay and the worker) return the error.
func NewAMQPCeleryBroker(host string) *AMQPCeleryBroker {
	conn, ch, err := NewAMQPConnectionContext(context.Background(), host)
	b := NewAMQPCeleryBrokerByConnAndChannel(conn, ch)
	b.URL, b.dialErr = host, err
	return b
}

// NewAMQPCeleryBrokerByConnAndChannel returns a broker for queue "celery" on Celery's exchange
// "celery", with conn and channel as its Connection and Channel (the caller's to close). Nothing
// is declared or consumed yet: gocelery declared its queues and started consuming here (so a
// program that only sent tasks held up to Rate of them, never run, until it exited); the engine
// declares what it uses when it first uses it.
func NewAMQPCeleryBrokerByConnAndChannel(conn *amqp.Connection, channel *amqp.Channel) *AMQPCeleryBroker {
	return &AMQPCeleryBroker{
		Channel:    channel,
		Connection: conn,
		Exchange:   NewAMQPExchange(celerycompat.DefaultQueue),
		Queue:      NewAMQPQueue(celerycompat.DefaultQueue),
		Rate:       4,
	}
}

func (b *AMQPCeleryBroker) queue() string {
	if b.Queue == nil || b.Queue.Name == "" {
		return celerycompat.DefaultQueue
	}
	return b.Queue.Name
}

// declaration is the queue as the engine declares it, checked against Celery's flags.
func (b *AMQPCeleryBroker) declaration() (celeryamqp.Queue, error) {
	q := celeryamqp.Queue{Name: b.queue(), RoutingKey: b.queue()}
	if b.Queue != nil && (!b.Queue.Durable || b.Queue.AutoDelete) {
		return q, fmt.Errorf("%w: AMQP queue %q must be durable and not auto-deleted, as Celery declares it (RabbitMQ refuses a re-declaration with other flags)", ErrConfig, q.Name)
	}
	if b.Exchange != nil {
		if !b.Exchange.Durable || b.Exchange.AutoDelete {
			return q, fmt.Errorf("%w: AMQP exchange %q must be durable and not auto-deleted, as Celery declares it", ErrConfig, b.Exchange.Name)
		}
		q.Exchange, q.ExchangeType = b.Exchange.Name, b.Exchange.Type
	}
	return q, nil
}

// engine connects the celerycompat transport and producer on first use. A failed attempt is
// tried again on the next call.
func (b *AMQPCeleryBroker) engine(ctx context.Context) (*celeryamqp.Transport, *celerycompat.Producer, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.transport != nil {
		return b.transport, b.producer, nil
	}
	if b.dialErr != nil {
		return nil, nil, b.dialErr
	}
	q, err := b.declaration()
	if err != nil {
		return nil, nil, err
	}
	u := b.URL
	if u == "" {
		if u, err = connectionURL(b.Connection); err != nil {
			return nil, nil, err
		}
	}
	tr, err := celeryamqp.New(ctx, celeryamqp.Config{URL: u, Queues: []celeryamqp.Queue{q}})
	if err != nil {
		return nil, nil, fmt.Errorf("gocelery: amqp transport: %w", err)
	}
	protocol := b.Protocol
	if protocol == 0 {
		protocol = 2
	}
	producer, err := celerycompat.NewProducer(tr, celerycompat.ProducerConfig{DefaultQueue: q.Name, Protocol: protocol})
	if err != nil {
		_ = tr.Close()
		return nil, nil, fmt.Errorf("gocelery: producer: %w", err)
	}
	b.transport, b.producer = tr, producer
	return tr, producer, nil
}

// connectionURL rebuilds the URL of an open connection (address, vhost, PLAIN or AMQPLAIN
// credentials), so the engine can open a connection of its own to the same place. amqp091-go
// 1.17 erases the password once the connection is open; then it is an error asking for URL.
func connectionURL(conn *amqp.Connection) (string, error) {
	if conn == nil {
		return "", fmt.Errorf("%w: AMQPCeleryBroker has no Connection", ErrConfig)
	}
	u := url.URL{Scheme: "amqp", Path: "/" + conn.Config.Vhost, RawPath: "/" + url.PathEscape(conn.Config.Vhost)}
	if st := conn.ConnectionState(); st.HandshakeComplete {
		// A custom tls.Config cannot be carried over: only a server name the system roots verify.
		u.Scheme = "amqps"
		if st.ServerName == "" {
			return "", fmt.Errorf("%w: TLS connection without a server name; use NewAMQPCeleryBroker with an amqps:// URL", ErrConfig)
		}
		_, port, _ := net.SplitHostPort(conn.RemoteAddr().String())
		u.Host = net.JoinHostPort(st.ServerName, port)
	} else {
		u.Host = conn.RemoteAddr().String()
	}
	for _, a := range conn.Config.SASL {
		switch a := a.(type) {
		case *amqp.PlainAuth:
			if a.Password != "" {
				u.User = url.UserPassword(a.Username, a.Password)
			}
		case *amqp.AMQPlainAuth:
			if a.Password != "" {
				u.User = url.UserPassword(a.Username, a.Password)
			}
		}
	}
	if u.User == nil {
		return "", fmt.Errorf("%w: AMQPCeleryBroker.URL is not set and the credentials of Connection cannot be read back; set URL to the broker URL the connection was dialled with", ErrConfig)
	}
	return u.String(), nil
}

// transportFor gives CeleryWorker the engine's transport (engineBroker).
func (b *AMQPCeleryBroker) transportFor(ctx context.Context) (celerycompat.Transport, error) {
	tr, _, err := b.engine(ctx)
	if err != nil {
		return nil, err
	}
	return tr, nil
}

func (b *AMQPCeleryBroker) send(ctx context.Context, task string, args []any, kwargs map[string]any, opts ...celerycompat.SendOption) (string, error) {
	_, producer, err := b.engine(ctx)
	if err != nil {
		return "", err
	}
	res, err := producer.Send(ctx, task, args, kwargs, append(opts, celerycompat.WithQueue(b.queue()))...)
	if err != nil {
		return "", fmt.Errorf("gocelery: send %s: %w", task, err)
	}
	return res.ID, nil
}

// SendCeleryMessage publishes a message whose body is a protocol 1 task (TaskMessage.Encode) to
// Queue, as Celery publishes it, waiting for the broker's confirm. The task's id, args, kwargs,
// ETA and expiry are kept; the envelope is rebuilt as Celery writes it.
func (b *AMQPCeleryBroker) SendCeleryMessage(message *CeleryMessage) error {
	return sendCeleryMessage(message, b.send)
}

// StartConsumingChannel starts the consumer GetTaskMessage reads from, on the engine's
// connection, with prefetch Rate. Calling it again does nothing.
func (b *AMQPCeleryBroker) StartConsumingChannel() error {
	_, err := b.getConsumer(context.Background())
	return err
}

func (b *AMQPCeleryBroker) getConsumer(ctx context.Context) (celerycompat.Consumer, error) {
	tr, _, err := b.engine(ctx)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.consumer != nil {
		return b.consumer, nil
	}
	rate := b.Rate
	if rate < 1 {
		rate = 1
	}
	c, err := tr.Consume(ctx, celerycompat.ConsumerConfig{Queues: []string{b.queue()}, Prefetch: rate})
	if err != nil {
		return nil, fmt.Errorf("gocelery: consume %s: %w", b.queue(), err)
	}
	b.consumer = c
	return c, nil
}

// getTaskWait is how long GetTaskMessage waits for a delivery the broker may be sending.
const getTaskWait = 20 * time.Millisecond

// GetTaskMessage takes one task from Queue (either protocol), starting the consumer if needed:
// (nil, nil) when none arrives within a few milliseconds. The message is acknowledged before
// it is returned, so the caller owns it (at most once, as in gocelery). CeleryWorker does not
// use this path on an AMQPCeleryBroker: it runs the engine's worker, which acknowledges after
// the result is stored. A message that cannot be decoded is dead-lettered (to the queue
// "celerybridge.deadletter", with the reason in its headers) and reported as an error wrapping
// ErrUnsupportedMessage.
func (b *AMQPCeleryBroker) GetTaskMessage() (*TaskMessage, error) {
	ctx := context.Background()
	c, err := b.getConsumer(ctx)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, getTaskWait)
	ds, err := c.Next(wctx, 1)
	cancel()
	if len(ds) == 0 {
		if err == nil || errors.Is(err, context.DeadlineExceeded) {
			return nil, nil
		}
		return nil, fmt.Errorf("gocelery: fetch from %s: %w", b.queue(), err)
	}
	d := ds[0]
	if d.DecodeErr != nil || d.Message == nil {
		reason := "undecodable message"
		if d.DecodeErr != nil {
			reason = d.DecodeErr.Error()
		}
		if err := c.DeadLetter(ctx, d, reason); err != nil {
			return nil, fmt.Errorf("gocelery: dead-letter %s: %w", d.Tag, err)
		}
		return nil, fmt.Errorf("%w: %s (dead-lettered)", ErrUnsupportedMessage, reason)
	}
	if err := c.Ack(ctx, d); err != nil {
		return nil, fmt.Errorf("gocelery: ack %s: %w", d.Tag, err)
	}
	return taskMessageOf(d.Message), nil
}

// CreateExchange declares Exchange on Channel with its stored flags.
func (b *AMQPCeleryBroker) CreateExchange() error {
	if b.Channel == nil || b.Exchange == nil {
		return fmt.Errorf("%w: CreateExchange needs Channel and Exchange", ErrConfig)
	}
	return b.ExchangeDeclare(b.Exchange.Name, b.Exchange.Type, b.Exchange.Durable, b.Exchange.AutoDelete, false, false, nil)
}

// CreateQueue declares Queue on Channel with its stored flags and, as Celery does, binds it to
// Exchange with the queue name as routing key (gocelery left it unbound).
func (b *AMQPCeleryBroker) CreateQueue() error {
	if b.Channel == nil || b.Queue == nil {
		return fmt.Errorf("%w: CreateQueue needs Channel and Queue", ErrConfig)
	}
	if _, err := b.QueueDeclare(b.Queue.Name, b.Queue.Durable, b.Queue.AutoDelete, false, false, nil); err != nil {
		return err
	}
	if b.Exchange == nil || b.Exchange.Name == "" {
		return nil
	}
	return b.QueueBind(b.Queue.Name, b.Queue.Name, b.Exchange.Name, false, nil)
}

// CloseEngine closes the connection the engine opened (not Connection, which is the
// program's): a consumer started by StartConsumingChannel stops and what it held goes back to
// the queue. Stop the worker first. gocelery had no such method; a program that exits anyway
// need not call it.
func (b *AMQPCeleryBroker) CloseEngine() error {
	b.mu.Lock()
	tr := b.transport
	b.transport, b.producer, b.consumer = nil, nil, nil
	b.mu.Unlock()
	if tr == nil {
		return nil
	}
	return tr.Close()
}
