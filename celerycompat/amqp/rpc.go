package amqp

import (
	"bytes"
	"container/list"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// Celery's rpc:// result backend (celery/backends/rpc.py), as the wire shows it (docs/amqp-wire.md
// §10):
//
//   - a worker publishes each state of a task to the default exchange "" with routing key = the
//     task message's reply_to and correlation_id = its correlation_id (the task id), delivery_mode
//     1 (result_persistent off), content type application/json, encoding utf-8, empty headers;
//     the body is {"task_id", "status", "result", "traceback", "children"} up to Celery 5.6, and
//     from 5.7 on the meta the Redis backend stores (status, result, traceback, children,
//     date_done, [group_id, parent_id, extended fields], task_id), both captured;
//   - the client declares its reply queue, named after the app's oid (the reply_to its send_task
//     puts in every task), auto-delete with x-expires = result_expires in ms, durable in Celery
//     5.7 and transient in 5.2 (both captured; the switch came with Celery's durable-by-default
//     change, taken here as 5.6), bound to nothing but the default exchange, and consumes it
//     without acks; it routes each message by correlation_id and keeps what it received.
//
// Both body shapes are read by every Celery (the client takes the dict as it comes), so the
// shape written follows PeerVersion only to be byte-for-byte what that Celery writes.

// Celery versions where the rpc backend's wire changed (see above).
var (
	celery56 = celerycompat.Version{Major: 5, Minor: 6}
	celery57 = celerycompat.Version{Major: 5, Minor: 7}
)

// DefaultRPCMaxKept is RPCConfig.MaxKept's default: Celery's result consumer buffers up to 8192
// messages for tasks nobody waits on (MESSAGE_BUFFER_MAX).
const DefaultRPCMaxKept = 8192

// RPCConfig configures an RPCBackend. The zero value matches a default Celery app with
// result_backend='rpc://'.
type RPCConfig struct {
	// ReplyQueue is the reply queue results come back on, the reply_to of every task sent with
	// this backend (Celery's app.thread_oid); default a new UUID.
	ReplyQueue string
	// ResultExpires is result_expires, the reply queue's x-expires: zero means 24 h, negative
	// means none.
	ResultExpires time.Duration
	// Persistent is result_persistent: results are published with delivery_mode 2, not 1.
	Persistent bool
	// MaxKept bounds the results kept for tasks nobody is waiting on (default
	// DefaultRPCMaxKept); past it the oldest are dropped. Results being waited on are not counted.
	MaxKept int
	// PeerVersion is the oldest Celery that reads our results: it picks the body shape (5.7's
	// full meta or the older five keys), date_done's format, result value markers and the reply
	// queue's durability. Zero means 5.2.
	PeerVersion celerycompat.Version
	// Timezone is the app timezone of date_done when PeerVersion >= 5.5; nil means UTC.
	Timezone *time.Location
	// ResultExtended writes name, args, kwargs, worker, retries and queue (result_extended).
	ResultExtended bool
	// ReconnectMin and ReconnectMax bound the backoff between attempts to consume the reply
	// queue again after the connection was lost (defaults 100 ms and 5 s).
	ReconnectMin, ReconnectMax time.Duration
	// Logger receives diagnostics (reconnects, undecodable results); nil is silent.
	Logger *slog.Logger
	// Now is the clock of date_done; nil means time.Now.
	Now func() time.Time
}

// RPCBackend is Celery's rpc:// result backend on a Transport (a celerycompat.ResultBackend):
// a worker using it publishes each task state to the reply queue of the client that sent the
// task; a client (Producer, App) using it receives on its own reply queue the results of the
// tasks it sent, Python workers' and Go workers' alike.
//
// As in Celery, results are messages, not stored values: only the client that sent a task sees
// its result, a result is kept in memory once received (GetMeta and WaitMeta serve it until
// Forget, or until MaxKept newer results push it out), and a result published while the reply
// queue does not exist (the client was disconnected past x-expires) is lost. Chords are not
// supported (celerycompat.ErrChordUnsupported).
//
// One goroutine consumes the reply queue from NewRPCBackend to Close, re-declaring and consuming
// it again after a lost connection. Safe for concurrent use.
type RPCBackend struct {
	t      *Transport
	cfg    RPCConfig
	format protocol.ResultFormat
	log    *slog.Logger

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	done   chan struct{} // closed when the consuming goroutine has returned

	pubMu sync.Mutex // guards pub
	pub   *amqp091.Channel

	mu      sync.Mutex // guards the fields below
	ch      *amqp091.Channel
	entries map[string]*rpcEntry
	order   *list.List // of task ids, oldest first
	kept    int        // entries nobody waits on
	stopErr error      // why consuming stopped for good
}

// rpcEntry is what the client knows of one task.
type rpcEntry struct {
	meta    *celerycompat.ResultMeta // latest state received; nil before any
	err     error                    // decode error of the latest message
	waiters int
	changed chan struct{} // closed and replaced at each update
	elem    *list.Element
}

var (
	_ celerycompat.ResultBackend = (*RPCBackend)(nil)
	_ celerycompat.ReplyQueuer   = (*RPCBackend)(nil)
)

// NewRPCBackend declares the reply queue on t and starts consuming it. Close the backend before
// the Transport.
func NewRPCBackend(ctx context.Context, t *Transport, cfg RPCConfig) (*RPCBackend, error) {
	if t == nil {
		return nil, fmt.Errorf("%w: amqp: nil Transport", celerycompat.ErrInvalidConfig)
	}
	if cfg.ReplyQueue == "" {
		cfg.ReplyQueue = newOID()
	}
	if cfg.ResultExpires == 0 {
		cfg.ResultExpires = celerycompat.DefaultResultExpires
	}
	if cfg.ResultExpires > 0 && cfg.ResultExpires < time.Millisecond {
		return nil, fmt.Errorf("%w: amqp: result_expires %v is under a millisecond", celerycompat.ErrInvalidConfig, cfg.ResultExpires)
	}
	if cfg.MaxKept <= 0 {
		cfg.MaxKept = DefaultRPCMaxKept
	}
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = 100 * time.Millisecond
	}
	if cfg.ReconnectMax < cfg.ReconnectMin {
		cfg.ReconnectMax = max(5*time.Second, cfg.ReconnectMin)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	b := &RPCBackend{t: t, cfg: cfg, log: cfg.Logger, done: make(chan struct{}),
		entries: map[string]*rpcEntry{}, order: list.New()}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	codec := t.cfg.Codec
	if codec.PeerVersion.IsZero() {
		codec.PeerVersion = cfg.PeerVersion
	}
	b.format = protocol.ResultFormat{Codec: codec, PeerVersion: cfg.PeerVersion, ResultExtended: cfg.ResultExtended, Timezone: cfg.Timezone}
	deliveries, err := b.subscribe(ctx)
	if err != nil {
		return nil, err
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	go b.run(deliveries)
	return b, nil
}

// ReplyQueue is the reply queue's name, the reply_to of the tasks sent with this backend
// (celerycompat.ReplyQueuer).
func (b *RPCBackend) ReplyQueue() string { return b.cfg.ReplyQueue }

// Close stops consuming (the auto-delete reply queue goes once unused, as Celery's does) and
// makes pending WaitMeta calls return an error wrapping celerycompat.ErrBackend. Results already
// received stay readable. Idempotent.
func (b *RPCBackend) Close() error {
	b.cancel()
	b.mu.Lock()
	ch := b.ch
	b.mu.Unlock()
	if ch != nil {
		_ = ch.Close()
	}
	<-b.done
	b.pubMu.Lock()
	if b.pub != nil {
		_ = b.pub.Close()
		b.pub = nil
	}
	b.pubMu.Unlock()
	return nil
}

// queueArgs are the reply queue's arguments: x-expires = result_expires in ms (kombu's expires).
func (b *RPCBackend) queueArgs() amqp091.Table {
	if b.cfg.ResultExpires < 0 {
		return nil
	}
	ms := b.cfg.ResultExpires.Milliseconds()
	if ms <= math.MaxInt32 {
		return amqp091.Table{"x-expires": int32(ms)} // py-amqp's signed 32-bit int where it fits
	}
	return amqp091.Table{"x-expires": ms}
}

// durable reports whether the reply queue is durable: Celery 5.7 declares it so (captured), 5.2
// transient.
func (b *RPCBackend) durable() bool { return b.cfg.PeerVersion.AtLeast(celery56) }

// subscribe declares the reply queue on a new channel and consumes it without acks.
func (b *RPCBackend) subscribe(ctx context.Context) (<-chan amqp091.Delivery, error) {
	conn, err := b.t.connection(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("%w: amqp open channel: %w", celerycompat.ErrBroker, err)
	}
	q := b.cfg.ReplyQueue
	if _, err := ch.QueueDeclare(q, b.durable(), true, false, false, b.queueArgs()); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("%w: amqp declare reply queue %q: %w", celerycompat.ErrBroker, q, err)
	}
	deliveries, err := ch.Consume(q, "", true, false, false, false, nil)
	if err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("%w: amqp consume reply queue %q: %w", celerycompat.ErrBroker, q, err)
	}
	b.mu.Lock()
	b.ch = ch
	// A Close that ran while this subscribed did not see ch: close it here, so run returns.
	closing := b.ctx != nil && b.ctx.Err() != nil
	b.mu.Unlock()
	if closing {
		_ = ch.Close()
	}
	return deliveries, nil
}

// run consumes deliveries and, when they end with a lost connection, subscribes again with
// backoff. It returns at Close or when the Transport is closed.
func (b *RPCBackend) run(deliveries <-chan amqp091.Delivery) {
	defer close(b.done)
	backoff := time.Duration(0)
	for {
		for d := range deliveries {
			b.deliver(&d)
		}
		for {
			if b.ctx.Err() != nil {
				b.stop(fmt.Errorf("%w: rpc: closed", celerycompat.ErrBackend))
				return
			}
			b.log.Warn("rpc result consumer lost its channel; consuming again", "queue", b.cfg.ReplyQueue, "backoff", backoff)
			if backoff > 0 {
				select {
				case <-time.After(backoff):
				case <-b.ctx.Done():
					continue
				}
			}
			var err error
			deliveries, err = b.subscribe(b.ctx)
			if err == nil {
				backoff = 0
				break
			}
			if errors.Is(err, ErrClosed) {
				b.stop(fmt.Errorf("%w: rpc: the transport is closed: %w", celerycompat.ErrBackend, err))
				return
			}
			b.log.Warn("rpc result consumer could not resubscribe", "queue", b.cfg.ReplyQueue, "error", err)
			backoff = min(max(2*backoff, b.cfg.ReconnectMin), b.cfg.ReconnectMax)
		}
	}
}

// stop records why consuming ended and wakes every waiter.
func (b *RPCBackend) stop(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopErr = err
	for _, e := range b.entries {
		e.notify()
	}
}

func (e *rpcEntry) notify() {
	close(e.changed)
	e.changed = make(chan struct{})
}

// deliver routes one reply message to its task by correlation_id (the body's task_id for
// messages without one, as Celery does for old peers).
func (b *RPCBackend) deliver(d *amqp091.Delivery) {
	id := d.CorrelationId
	if id == "" {
		id = resultTaskID(d.Body)
	}
	meta, err := b.decode(id, d)
	if id == "" {
		b.log.Error("rpc result without correlation_id or task_id dropped", "queue", b.cfg.ReplyQueue, "error", err)
		return
	}
	if err != nil {
		b.log.Error("undecodable rpc result", "task_id", id, "error", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entryLocked(id)
	if err != nil {
		e.err = err
	} else if e.meta == nil || !e.meta.Status.Ready() || meta.Status.Ready() {
		// A ready state is final: a late non-ready one (a duplicate STARTED) does not undo it.
		e.meta, e.err = meta, nil
	}
	e.notify()
	b.evictLocked()
}

// decode decodes a reply message's body as Celery's result meta.
func (b *RPCBackend) decode(id string, d *amqp091.Delivery) (*celerycompat.ResultMeta, error) {
	if d.ContentType != "application/json" {
		return nil, fmt.Errorf("%w: rpc result of task %s: content type %q (want application/json)",
			celerycompat.ErrUnsupportedContentType, id, d.ContentType)
	}
	if d.ContentEncoding != "" && d.ContentEncoding != "utf-8" && d.ContentEncoding != "binary" {
		return nil, fmt.Errorf("%w: rpc result of task %s: content encoding %q", celerycompat.ErrDecode, id, d.ContentEncoding)
	}
	return b.format.DecodeMeta(id, d.Body)
}

// entryLocked returns id's entry, making it (as the newest kept one) when there is none.
func (b *RPCBackend) entryLocked(id string) *rpcEntry {
	if e, ok := b.entries[id]; ok {
		return e
	}
	e := &rpcEntry{changed: make(chan struct{})}
	e.elem = b.order.PushBack(id)
	b.entries[id] = e
	b.kept++
	return e
}

// evictLocked drops the oldest entries nobody waits on while more than MaxKept are kept.
func (b *RPCBackend) evictLocked() {
	for el := b.order.Front(); el != nil && b.kept > b.cfg.MaxKept; {
		next := el.Next()
		id := el.Value.(string)
		if e := b.entries[id]; e.waiters == 0 {
			b.removeLocked(id, e)
		}
		el = next
	}
}

func (b *RPCBackend) removeLocked(id string, e *rpcEntry) {
	b.order.Remove(e.elem)
	delete(b.entries, id)
	if e.waiters == 0 {
		b.kept--
	}
}

// StoreState publishes meta to the reply queue req names (celerycompat.ResultBackend). Without a
// request or its reply_to there is no one to tell: nothing is published and stored is false, as
// Celery's store_result does.
func (b *RPCBackend) StoreState(ctx context.Context, req *celerycompat.Message, meta celerycompat.ResultMeta) (bool, error) {
	if meta.TaskID == "" || meta.Status == "" {
		return false, fmt.Errorf("%w: rpc: store result: empty task id or status", celerycompat.ErrInvalidConfig)
	}
	if req == nil || req.ReplyTo == "" {
		return false, nil
	}
	body, err := b.encode(meta)
	if err != nil {
		return false, fmt.Errorf("celerycompat/amqp: rpc: store result of task %s: %w", meta.TaskID, err)
	}
	pub := b.publishing(req, meta.TaskID, body)
	for attempt := 0; ; attempt++ {
		err = b.publish(ctx, req.ReplyTo, pub)
		if err == nil {
			return true, nil
		}
		if attempt == 1 || ctx.Err() != nil {
			return false, fmt.Errorf("%w: rpc: store result of task %s: %w", celerycompat.ErrBackend, meta.TaskID, err)
		}
	}
}

// encode renders meta as the peer's Celery publishes it: the Redis meta from 5.7 on, else
// {"task_id", "status", "result", "traceback", "children"} in that order.
func (b *RPCBackend) encode(m celerycompat.ResultMeta) ([]byte, error) {
	if b.cfg.PeerVersion.AtLeast(celery57) {
		return b.format.EncodeMeta(m, b.cfg.Now())
	}
	res, err := b.format.EncodeResult(m.Result)
	if err != nil {
		return nil, fmt.Errorf("result: %w", err)
	}
	children := m.Children
	if children == nil {
		children = []any{}
	}
	ch, err := b.format.Codec.MarshalValue(children)
	if err != nil {
		return nil, fmt.Errorf("children: %w", err)
	}
	var buf bytes.Buffer
	buf.WriteString(`{"task_id": `)
	protocol.WritePyString(&buf, m.TaskID)
	buf.WriteString(`, "status": `)
	protocol.WritePyString(&buf, string(m.Status))
	buf.WriteString(`, "result": `)
	buf.Write(res)
	buf.WriteString(`, "traceback": `)
	protocol.WritePyStringOrNull(&buf, m.Traceback)
	buf.WriteString(`, "children": `)
	buf.Write(ch)
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// publishing is the reply message of a state, with kombu's properties.
func (b *RPCBackend) publishing(req *celerycompat.Message, taskID string, body []byte) amqp091.Publishing {
	corr := req.CorrelationID
	if corr == "" {
		corr = taskID
	}
	mode := uint8(amqp091.Transient)
	if b.cfg.Persistent {
		mode = amqp091.Persistent
	}
	return amqp091.Publishing{
		Headers: amqp091.Table{}, ContentType: "application/json", ContentEncoding: "utf-8",
		DeliveryMode: mode, CorrelationId: corr, Body: body,
	}
}

// publish sends pub to the default exchange with routing key replyTo, declaring nothing (Celery's
// worker does not declare the client's queue either: a result for a queue that is gone is
// unroutable and dropped by the broker). A failure drops the channel for the next attempt.
func (b *RPCBackend) publish(ctx context.Context, replyTo string, pub amqp091.Publishing) error {
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	if b.pub == nil || b.pub.IsClosed() {
		conn, err := b.t.connection(ctx)
		if err != nil {
			return err
		}
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("%w: amqp open channel: %w", celerycompat.ErrBroker, err)
		}
		if err := ch.Confirm(false); err != nil {
			_ = ch.Close()
			return fmt.Errorf("%w: amqp confirm.select: %w", celerycompat.ErrBroker, err)
		}
		b.pub = ch
	}
	dc, err := b.pub.PublishWithDeferredConfirmWithContext(ctx, "", replyTo, false, false, pub)
	if err == nil {
		err = waitConfirm(ctx, dc)
	}
	if err != nil {
		_ = b.pub.Close()
		b.pub = nil
		return fmt.Errorf("%w: amqp publish result to %q: %w", celerycompat.ErrBroker, replyTo, err)
	}
	return nil
}

// GetMeta returns the latest state received for task id, PENDING when none was
// (celerycompat.ResultBackend). A result that could not be decoded gives its decode error.
func (b *RPCBackend) GetMeta(_ context.Context, id string) (*celerycompat.ResultMeta, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.entries[id]; ok {
		if e.err != nil {
			return nil, e.err
		}
		if e.meta != nil {
			m := *e.meta
			return &m, nil
		}
	}
	return &celerycompat.ResultMeta{TaskID: id, Status: celerycompat.StatePending}, nil
}

// WaitMeta blocks until a ready state of task id has been received (or was already) and returns
// it (celerycompat.ResultBackend). It returns ctx's error when ctx ends first, a decode error for
// an undecodable result, and an error wrapping celerycompat.ErrBackend once the backend or its
// Transport is closed.
func (b *RPCBackend) WaitMeta(ctx context.Context, id string) (*celerycompat.ResultMeta, error) {
	b.mu.Lock()
	e := b.entryLocked(id)
	e.waiters++
	if e.waiters == 1 {
		b.kept--
	}
	defer func() {
		e.waiters--
		if e.waiters == 0 {
			if b.entries[id] == e {
				b.kept++
				if e.meta == nil && e.err == nil {
					b.removeLocked(id, e) // nothing received: keep no empty entry
				}
				b.evictLocked()
			}
		}
		b.mu.Unlock()
	}()
	for {
		switch {
		case e.err != nil:
			return nil, e.err
		case e.meta != nil && e.meta.Status.Ready():
			m := *e.meta
			return &m, nil
		case b.stopErr != nil:
			return nil, b.stopErr
		}
		changed := e.changed
		b.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			b.mu.Lock()
			return nil, ctx.Err()
		}
		b.mu.Lock()
	}
}

// Forget drops what was received for task id (AsyncResult.forget); the broker holds nothing.
func (b *RPCBackend) Forget(_ context.Context, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.entries[id]; ok && e.waiters == 0 {
		b.removeLocked(id, e)
	} else if ok {
		e.meta, e.err = nil, nil
	}
	return nil
}

// resultTaskID reads task_id from a reply body (for messages without correlation_id).
func resultTaskID(body []byte) string {
	var v struct {
		TaskID string `json:"task_id"`
	}
	_ = json.Unmarshal(body, &v)
	return v.TaskID
}

// newOID is a random (version 4) UUID, the reply queue's default name: Celery's oid is a UUID too.
func newOID() string {
	var u [16]byte
	_, _ = rand.Read(u[:]) // crypto/rand.Read never fails (Go 1.24)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
