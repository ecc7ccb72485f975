package celerycompat

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// Celery's remote-control mailbox ("pidbox", kombu/pidbox.py): requests are broadcast through the
// fanout exchange celery.pidbox to every worker's queue "<node>.celery.pidbox"; replies go
// through the direct exchange reply.celery.pidbox to the client's queue
// "<oid>.reply.celery.pidbox", bound with routing key oid. A Fanout carries them.
const (
	pidboxExchange      = "celery.pidbox"
	pidboxReplyExchange = "reply.celery.pidbox"
	// DefaultControlTimeout is how long Celery's inspect and control collect replies.
	DefaultControlTimeout = time.Second
)

// pidboxQueue is a worker's mailbox queue, bound to celery.pidbox with an empty routing key.
func pidboxQueue(node string) string { return node + ".celery.pidbox" }

// replyQueue is a client's reply queue, bound to reply.celery.pidbox with routing key oid.
func replyQueue(oid string) string { return oid + "." + pidboxReplyExchange }

// lamportClock is Celery's app.clock (kombu.clocks.LamportClock), shared by a worker's events
// and control replies. Safe for concurrent use.
type lamportClock struct{ v atomic.Int64 }

func (c *lamportClock) forward() int64 { return c.v.Add(1) }
func (c *lamportClock) value() int64   { return c.v.Load() }

// adjust is LamportClock.adjust: the clock becomes max(local, other) + 1.
func (c *lamportClock) adjust(other int64) int64 {
	for {
		cur := c.v.Load()
		n := max(cur, other) + 1
		if c.v.CompareAndSwap(cur, n) {
			return n
		}
	}
}

// appendFanoutEnvelope appends a kombu envelope around a JSON body (events, pidbox requests and
// replies): base64 body, the given headers, delivery_mode and delivery_info, priority 0 and a
// new delivery tag, laid out as kombu writes it.
func appendFanoutEnvelope(b, body []byte, headers protocol.PyDict, deliveryMode int, exchange, routingKey string, markers bool) ([]byte, error) {
	b = append(b, `{"body": "`...)
	b = base64.StdEncoding.AppendEncode(b, body)
	b = append(b, `", "content-encoding": "utf-8", "content-type": "application/json", "headers": `...)
	b, err := protocol.AppendJSON(b, headers, 0, markers)
	if err != nil {
		return nil, err
	}
	b = append(b, `, "properties": {"delivery_mode": `...)
	b = strconv.AppendInt(b, int64(deliveryMode), 10)
	b = append(b, `, "delivery_info": {"exchange": `...)
	b = protocol.AppendPyString(b, exchange)
	b = append(b, `, "routing_key": `...)
	b = protocol.AppendPyString(b, routingKey)
	b = append(b, `}, "priority": 0, "body_encoding": "base64", "delivery_tag": "`...)
	b = append(b, uuid.NewString()...)
	return append(b, `"}}`...), nil
}

// kombuEnvelope is a decoded Redis envelope (events, pidbox requests and replies).
type kombuEnvelope struct {
	headers map[string]any
	body    []byte // after base64
}

// decodeFanoutEnvelope reads a kombu envelope whose body is JSON (pidbox and event messages).
func decodeFanoutEnvelope(raw []byte) (*kombuEnvelope, error) {
	headers, body, err := protocol.DecodeEnvelope(raw)
	if err != nil {
		return nil, err
	}
	return &kombuEnvelope{headers: headers, body: body}, nil
}

// delivery is the envelope's content as a Fanout hands it over.
func (e *kombuEnvelope) delivery() *FanoutDelivery {
	return &FanoutDelivery{Headers: e.headers, Body: e.body}
}

// value decodes the body as one JSON value (kombu markers converted).
func (e *kombuEnvelope) value() (any, error) { return e.delivery().value() }

// headerFloat reads a numeric header (clock, expires); 0 when absent or not a number.
func (e *kombuEnvelope) headerFloat(k string) float64 { return e.delivery().headerFloat(k) }

// controlRequest is a pidbox request body.
type controlRequest struct {
	Method      string
	Arguments   map[string]any
	Destination []string // nil: every node
	Pattern     string
	Matcher     string
	Ticket      string
	ReplyTo     *replyTo // nil: no reply wanted
}

type replyTo struct{ Exchange, RoutingKey string }

// decodeControlRequest reads a pidbox request from a decoded body.
func decodeControlRequest(v any) (*controlRequest, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, &DecodeError{Field: "body", Err: protocol.WantType("an object", v)}
	}
	r := &controlRequest{}
	var err error
	if r.Method, err = protocol.StringOrNull(m["method"], "body.method"); err != nil {
		return nil, err
	}
	if r.Method == "" {
		return nil, &DecodeError{Field: "body.method", Err: errors.New("missing")}
	}
	if a := m["arguments"]; a != nil {
		if r.Arguments, ok = a.(map[string]any); !ok {
			return nil, &DecodeError{Field: "body.arguments", Err: protocol.WantType("an object", a)}
		}
	}
	switch d := m["destination"].(type) {
	case nil:
	case []any:
		r.Destination = make([]string, 0, len(d))
		for _, e := range d {
			if s, ok := e.(string); ok {
				r.Destination = append(r.Destination, s)
			}
		}
	case string: // not what Python sends, but unambiguous
		r.Destination = []string{d}
	default:
		return nil, &DecodeError{Field: "body.destination", Err: protocol.WantType("a list", d)}
	}
	r.Pattern, _ = m["pattern"].(string)
	r.Matcher, _ = m["matcher"].(string)
	r.Ticket, _ = m["ticket"].(string)
	if rt, ok := m["reply_to"].(map[string]any); ok {
		r.ReplyTo = &replyTo{}
		r.ReplyTo.Exchange, _ = rt["exchange"].(string)
		r.ReplyTo.RoutingKey, _ = rt["routing_key"].(string)
		if r.ReplyTo.RoutingKey == "" {
			return nil, &DecodeError{Field: "body.reply_to.routing_key", Err: errors.New("missing")}
		}
	}
	return r, nil
}

// ControlConfig configures a Control client. The zero value works.
type ControlConfig struct {
	// Timeout is how long Broadcast collects replies when the call gives none (default 1 s, as
	// Celery's inspect and control).
	Timeout time.Duration
	// Logger receives diagnostics (undecodable replies); nil is silent.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Control sends Celery remote-control commands (what app.control and `celery inspect` /
// `celery control` send) to every worker, Python or Go, and collects their replies. A Control is
// safe for concurrent use: each Broadcast binds its own reply queue and removes it afterwards.
type Control struct {
	fanout Fanout
	codec  Codec
	cfg    ControlConfig
	log    *slog.Logger
	now    func() time.Time
	clock  lamportClock
}

// NewControl returns a control client publishing through t, which must carry remote control
// (a FanoutTransport: *Broker, or package amqp's Transport).
func NewControl(t Transport, cfg ControlConfig) (*Control, error) {
	if t == nil || reflectNil(t) {
		return nil, fmt.Errorf("%w: nil transport", ErrInvalidConfig)
	}
	f := fanoutOf(t)
	if f == nil {
		return nil, fmt.Errorf("%w: transport %T carries no remote control (not a FanoutTransport)", ErrInvalidConfig, t)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("%w: negative control timeout", ErrInvalidConfig)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultControlTimeout
	}
	c := &Control{fanout: f, codec: t.Codec(), cfg: cfg, log: cfg.Logger, now: cfg.Now}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// BroadcastOption sets one per-call option of Broadcast; the last one given wins.
type BroadcastOption func(*broadcastOptions)

type broadcastOptions struct {
	timeout          time.Duration
	destination      []string
	limit            int
	pattern, matcher string
	noReply          bool
}

// BroadcastTimeout sets how long replies are collected (Celery's timeout=).
func BroadcastTimeout(d time.Duration) BroadcastOption {
	return func(o *broadcastOptions) { o.timeout = d }
}

// BroadcastTo addresses only the named nodes (Celery's destination=). Collection then stops
// as soon as each has replied, unless BroadcastLimit says otherwise.
func BroadcastTo(nodes ...string) BroadcastOption {
	return func(o *broadcastOptions) { o.destination = append([]string(nil), nodes...) }
}

// BroadcastLimit stops collecting after n replies (Celery's limit=).
func BroadcastLimit(n int) BroadcastOption { return func(o *broadcastOptions) { o.limit = n } }

// BroadcastPattern addresses the nodes whose name matches pattern: matcher "glob" (the default) or
// "pcre" (a regular expression matched at the start of the name).
func BroadcastPattern(pattern, matcher string) BroadcastOption {
	return func(o *broadcastOptions) { o.pattern, o.matcher = pattern, matcher }
}

// BroadcastNoReply sends the command without asking for replies (Celery's reply=False); Broadcast
// then returns nil replies at once.
func BroadcastNoReply() BroadcastOption { return func(o *broadcastOptions) { o.noReply = true } }

// Replies maps each node that answered to its reply, as raw JSON. A command a node does not
// know, or that failed there, gives {"error": "..."}.
type Replies map[string]json.RawMessage

// Nodes returns the names of the nodes that replied, sorted.
func (r Replies) Nodes() []string {
	out := make([]string, 0, len(r))
	for n := range r {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Value decodes node's reply into generic values (json.Number numbers, kombu markers converted);
// nil when the node did not reply.
func (r Replies) Value(node string) (any, error) {
	raw, ok := r[node]
	if !ok {
		return nil, nil
	}
	return Codec{}.UnmarshalValue(raw)
}

// Ping asks every worker for "pong" (celery inspect ping).
func (c *Control) Ping(ctx context.Context, opts ...BroadcastOption) (Replies, error) {
	return c.Broadcast(ctx, "ping", nil, opts...)
}

// inspectArgs are the arguments Celery's Inspect methods send.
var inspectArgs = map[string]map[string]any{
	"active":     {"safe": nil},
	"registered": {"taskinfoitems": []any{}},
	"conf":       {"with_defaults": false},
}

// Inspect runs an inspect command ("active", "reserved", "scheduled", "registered", "stats",
// "revoked", "active_queues", "clock", "conf", "report", ...) with the arguments Celery's
// app.control.inspect() sends for it.
func (c *Control) Inspect(ctx context.Context, method string, opts ...BroadcastOption) (Replies, error) {
	return c.Broadcast(ctx, method, inspectArgs[method], opts...)
}

// Revoke revokes task ids on every worker (app.control.revoke): queued, prefetched and
// ETA-held copies are discarded as REVOKED, and with terminate the running ones are stopped
// (SIGTERM for Python workers, context cancellation for Go ones). It waits for replies as any
// Broadcast; pass BroadcastNoReply for fire-and-forget, as Celery's revoke() does by default.
func (c *Control) Revoke(ctx context.Context, ids []string, terminate bool, opts ...BroadcastOption) (Replies, error) {
	if len(ids) == 0 {
		return nil, fmt.Errorf("%w: revoke without task ids", ErrInvalidConfig)
	}
	list := make([]any, len(ids))
	for i, id := range ids {
		list[i] = id
	}
	return c.Broadcast(ctx, "revoke", map[string]any{"task_id": list, "terminate": terminate, "signal": "SIGTERM"}, opts...)
}

// Broadcast publishes command with args to the workers' mailbox and collects replies until the
// timeout passes (default ControlConfig.Timeout), the reply limit is reached, or ctx ends. It
// returns the replies collected so far together with ctx's error when ctx ended first.
func (c *Control) Broadcast(ctx context.Context, command string, args map[string]any, opts ...BroadcastOption) (Replies, error) {
	o := broadcastOptions{timeout: c.cfg.Timeout}
	for _, opt := range opts {
		opt(&o)
	}
	if command == "" || o.timeout <= 0 || o.limit < 0 {
		return nil, fmt.Errorf("%w: broadcast needs a command, a positive timeout and a non-negative limit", ErrInvalidConfig)
	}
	if o.matcher != "" && o.matcher != "glob" && o.matcher != "pcre" {
		return nil, fmt.Errorf("%w: matcher %q (want glob or pcre)", ErrInvalidConfig, o.matcher)
	}
	if o.limit == 0 && len(o.destination) > 0 {
		o.limit = len(o.destination)
	}
	if args == nil {
		args = map[string]any{}
	}

	body := protocol.PyDict{{Key: "method", Value: command}, {Key: "arguments", Value: args}, {Key: "destination", Value: nil}, {Key: "pattern", Value: nil}, {Key: "matcher", Value: nil}}
	if o.destination != nil {
		body[2].Value = o.destination
	}
	if o.pattern != "" {
		body[3].Value = o.pattern
		body[4].Value = orDefault(o.matcher, "glob")
	}
	var ticket, oid string
	if !o.noReply {
		ticket, oid = uuid.NewString(), uuid.NewString()
		body = append(body, protocol.PyItem{Key: "ticket", Value: ticket}, protocol.PyItem{Key: "reply_to", Value: protocol.PyDict{{Key: "exchange", Value: pidboxReplyExchange}, {Key: "routing_key", Value: oid}}})
	}
	markers := c.codec.PeerVersion.AtLeast(Celery53)
	bodyJSON, err := protocol.AppendJSON(nil, body, 0, markers)
	if err != nil {
		return nil, fmt.Errorf("broadcast %s: %w", command, err)
	}
	start := c.now()
	expires := float64(start.Add(o.timeout).UnixNano()) / 1e9
	headers := protocol.PyDict{{Key: "clock", Value: c.clock.forward()}, {Key: "expires", Value: expires}}
	var inbox ReplyInbox
	if !o.noReply {
		// Declare the reply queue before publishing, as kombu does (maybe_declare of the reply
		// queue), and remove it once done.
		if inbox, err = c.fanout.OpenReplies(ctx, oid); err != nil {
			return nil, fmt.Errorf("broadcast %s: %w", command, err)
		}
		defer func() {
			if err := inbox.Close(context.WithoutCancel(ctx)); err != nil {
				c.log.Warn("could not remove a control reply queue", "queue", replyQueue(oid), "error", err)
			}
		}()
	}
	err = c.fanout.Broadcast(ctx, &FanoutMessage{Exchange: pidboxExchange, Headers: headers, Body: bodyJSON, DeliveryMode: 2, Markers: markers})
	if err != nil {
		return nil, fmt.Errorf("broadcast %s: %w", command, err)
	}
	if o.noReply {
		return nil, nil
	}
	return c.collect(ctx, inbox, ticket, start.Add(o.timeout), o.limit)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// collect takes replies from inbox until deadline or limit.
func (c *Control) collect(ctx context.Context, inbox ReplyInbox, ticket string, deadline time.Time, limit int) (Replies, error) {
	replies := Replies{}
	for limit == 0 || len(replies) < limit {
		if err := ctx.Err(); err != nil {
			return replies, err
		}
		left := deadline.Sub(c.now())
		if left <= 0 {
			break
		}
		d, err := inbox.Next(ctx, min(left, time.Second))
		var de *DecodeError
		switch {
		case errors.As(err, &de):
			c.log.Warn("undecodable control reply dropped", "error", err)
			continue
		case err != nil && ctx.Err() != nil:
			return replies, ctx.Err()
		case err != nil:
			return replies, fmt.Errorf("collect replies: %w", err)
		case d != nil:
			c.addReply(replies, d, ticket)
		}
	}
	return replies, nil
}

// addReply adds one reply to replies if it answers ticket (kombu's _collect: the clock is
// adjusted, expired replies and other tickets' replies are dropped).
func (c *Control) addReply(replies Replies, env *FanoutDelivery, ticket string) {
	c.clock.adjust(int64(env.headerFloat("clock")))
	if exp := env.headerFloat("expires"); exp > 0 && float64(c.now().UnixNano())/1e9 > exp {
		return
	}
	if t, _ := env.Headers["ticket"].(string); t != "" && t != ticket {
		return
	}
	err := protocol.ScanJSONObject(env.Body, func(node string, raw json.RawMessage) {
		replies[node] = raw
	})
	if err != nil {
		c.log.Warn("undecodable control reply dropped", "error", err)
	}
}
