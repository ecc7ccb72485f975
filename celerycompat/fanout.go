package celerycompat

import (
	"context"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// Fanout is the seam between celerycompat and the broker that carries Celery's broadcast traffic:
// remote control (kombu's pidbox: requests to every worker's mailbox, replies to the client that
// asked) and events (to the celeryev exchange, where Flower and `celery events` listen). It is
// narrow on purpose: the worker's mailbox, the Control client, mingle and the event dispatcher
// build every body and header (the control request and reply dicts, the ticket, the Lamport
// clock, reply_to, event dicts and their task.multi batches) and hand a Fanout only the carrying.
//
// *Broker (Redis) carries a FanoutMessage inside a kombu JSON envelope, PUBLISHed on the
// exchange's channel or LPUSHed to a reply list; package celerycompat/amqp carries it as an AMQP
// message to the exchange, its headers in application_headers. A Fanout is safe for concurrent
// use.
type Fanout interface {
	// JoinMailbox declares and binds node's mailbox queue ("<node>.celery.pidbox" on exchange
	// celery.pidbox) and starts receiving what is broadcast there. The Mailbox is the caller's
	// to Close.
	JoinMailbox(ctx context.Context, node string) (Mailbox, error)
	// MailboxNodes lists the nodes whose mailbox is bound now (used by mingle to know whom to
	// greet). A broker that cannot tell returns an error wrapping errors.ErrUnsupported.
	MailboxNodes(ctx context.Context) ([]string, error)
	// Broadcast publishes a control request to every mailbox (exchange celery.pidbox).
	Broadcast(ctx context.Context, m *FanoutMessage) error
	// OpenReplies declares the reply destination of a control client: the queue
	// "<oid>.reply.celery.pidbox" bound to reply.celery.pidbox with routing key oid. Close
	// removes it.
	OpenReplies(ctx context.Context, oid string) (ReplyInbox, error)
	// Reply publishes a control reply to m's exchange and routing key (a request's reply_to).
	// A reply nobody waits for any more is dropped, as on Celery's brokers.
	Reply(ctx context.Context, m *FanoutMessage) error
	// PublishEvents publishes events, in order, each to its exchange with its routing key, as
	// one batch where the broker allows (a Redis pipeline). An error means some were not sent.
	PublishEvents(ctx context.Context, ms []*FanoutMessage) error
}

// FanoutTransport is a Transport that also carries remote control and events. NewWorker and
// NewControl discover it by type assertion; a Transport without it runs tasks only.
type FanoutTransport interface {
	Transport
	// Fanout returns the transport's carrier for remote control and events.
	Fanout() Fanout
}

// FanoutMessage is one broadcast message as kombu would publish it: a JSON body and its headers,
// bound for an exchange with a routing key.
type FanoutMessage struct {
	// Exchange and RoutingKey say where it goes (celery.pidbox and "", reply.celery.pidbox and
	// the client's oid, celeryev and "worker.heartbeat" ...).
	Exchange, RoutingKey string
	// Headers are the message headers in the order kombu writes them (clock, expires, ticket,
	// hostname).
	Headers protocol.PyDict
	// Body is the JSON body (content type application/json, encoding utf-8).
	Body []byte
	// DeliveryMode is 1 (transient: replies, events) or 2 (persistent: control requests).
	DeliveryMode uint8
	// Markers says whether the peers read kombu's JSON type markers (Celery 5.3+), for a
	// carrier that encodes the headers as JSON.
	Markers bool
}

// FanoutDelivery is one message received from a Mailbox or ReplyInbox: its headers as plain
// values (numbers as float64, int, json.Number or the broker's integer types) and its JSON body.
type FanoutDelivery struct {
	Headers map[string]any
	Body    []byte
}

// headerFloat reads a numeric header (clock, expires); 0 when absent or not a number.
func (d *FanoutDelivery) headerFloat(k string) float64 {
	switch x := d.Headers[k].(type) {
	case int32:
		return float64(x)
	case int64:
		return float64(x)
	case int16:
		return float64(x)
	case int8:
		return float64(x)
	case uint8:
		return float64(x)
	case float32:
		return float64(x)
	}
	f, _ := numberOption(d.Headers[k])
	return f
}

// value decodes the body as one JSON value (kombu markers converted).
func (d *FanoutDelivery) value() (any, error) {
	v, err := protocol.DecodeJSON(d.Body)
	if err != nil {
		return nil, &DecodeError{Field: "body", Err: err}
	}
	return v, nil
}

// Mailbox is a worker's membership of the remote-control mailbox. Receive is called from one
// goroutine; Close may be called from any, once.
type Mailbox interface {
	// Receive blocks until a request arrives, ctx ends (ctx's error) or the mailbox's connection
	// fails (an error wrapping ErrBroker: the caller closes this Mailbox and joins again).
	Receive(ctx context.Context) (*FanoutDelivery, error)
	// Close leaves the mailbox (unbinds, or lets the broker delete the queue) and frees its
	// connection.
	Close(ctx context.Context) error
}

// ReplyInbox is a control client's reply destination. Next is called from one goroutine.
type ReplyInbox interface {
	// Next waits up to wait for one reply: it returns nil and no error when wait lapses, and
	// ctx's error when ctx ends first.
	Next(ctx context.Context, wait time.Duration) (*FanoutDelivery, error)
	// Close removes the reply destination and whatever is still in it.
	Close(ctx context.Context) error
}

// fanoutOf returns t's Fanout, or nil when t carries tasks only.
func fanoutOf(t Transport) Fanout {
	if ft, ok := t.(FanoutTransport); ok {
		return ft.Fanout()
	}
	return nil
}

// BrokerDescriber is implemented by a Transport that describes its connection for the "broker"
// section of `celery inspect stats` (kombu's Connection.info(): hostname, userid, virtual_host,
// port, transport, ...). *Broker's description is built in.
type BrokerDescriber interface {
	BrokerInfo() protocol.PyDict
}
