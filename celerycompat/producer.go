package celerycompat

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// DefaultQueue is Celery's task_default_queue.
const DefaultQueue = "celery"

// PublishHook runs around a publish, mirroring Celery's before_task_publish and after_task_publish
// signals (sender = m.Task). A before hook may change m's headers and properties; an error from it
// stops that message from being published and is returned to the caller.
type PublishHook func(ctx context.Context, m *Message) error

// ProducerConfig configures a Producer. The zero value works.
type ProducerConfig struct {
	// Backend, when set, is where results are read from: Send returns handles bound to it. A
	// backend with a reply queue (a ReplyQueuer, such as rpc://) also names every task's reply_to.
	Backend ResultBackend
	// DefaultQueue is the queue for tasks sent without WithQueue (default "celery").
	DefaultQueue string
	// Origin is the "origin" header, Celery's producer node name (default "gen<pid>@<hostname>").
	Origin string
	// Protocol is the task message protocol written: 2 (default) or 1 for very old peers.
	Protocol int
	// BeforeTaskPublish and AfterTaskPublish mirror Celery's signals of the same names.
	BeforeTaskPublish []PublishHook
	AfterTaskPublish  []PublishHook
	// Now is the clock used for countdown and relative expires; nil means time.Now.
	Now func() time.Time
}

// Producer sends Celery tasks. It is safe for concurrent use.
type Producer struct {
	broker  Transport
	cfg     ProducerConfig
	replyTo string
	now     func() time.Time
}

// NewProducer returns a producer publishing through broker: a *Broker (Redis) or another
// Transport, such as package amqp's.
func NewProducer(broker Transport, cfg ProducerConfig) (*Producer, error) {
	if broker == nil || reflectNil(broker) {
		return nil, fmt.Errorf("%w: nil broker", ErrInvalidConfig)
	}
	if cfg.DefaultQueue == "" {
		cfg.DefaultQueue = DefaultQueue
	}
	if cfg.Origin == "" {
		host, _ := os.Hostname()
		cfg.Origin = "gen" + strconv.Itoa(os.Getpid()) + "@" + host
	}
	switch cfg.Protocol {
	case 0:
		cfg.Protocol = 2
	case 1, 2:
	default:
		return nil, fmt.Errorf("%w: protocol %d (want 1 or 2)", ErrInvalidConfig, cfg.Protocol)
	}
	if cfg.Backend != nil && nilBackend(cfg.Backend) {
		cfg.Backend = nil
	}
	p := &Producer{broker: broker, cfg: cfg, replyTo: uuid.NewString(), now: cfg.Now}
	if rq, ok := cfg.Backend.(ReplyQueuer); ok {
		p.replyTo = rq.ReplyQueue()
	}
	if p.now == nil {
		p.now = time.Now
	}
	return p, nil
}

// SendOption sets one per-call option of Send; when an option is given twice the last one wins.
type SendOption func(*sendOptions)

type sendOptions struct {
	taskID, queue, routingKey, exchange string
	exchangeSet                         bool
	priority                            int
	countdown                           *time.Duration
	eta, expires                        *time.Time
	expiresIn                           *time.Duration
	timeLimit                           TimeLimit
	retries                             int
	ignoreResult                        bool
	headers                             map[string]any
	shadow                              string
	link, linkError, chain              []Signature
	parentID, rootID, groupID           string
	groupIndex                          *int
	chord                               *Signature
	protocol                            int
}

// WithTaskID sets the task id (default: a new UUID).
func WithTaskID(id string) SendOption { return func(o *sendOptions) { o.taskID = id } }

// WithQueue sends to queue (Celery's queue=): exchange "" and routing key = queue, as Celery does.
func WithQueue(queue string) SendOption { return func(o *sendOptions) { o.queue = queue } }

// WithRoute publishes through a named exchange and routing key, resolved through kombu's binding
// sets. Most users want WithQueue.
func WithRoute(exchange, routingKey string) SendOption {
	return func(o *sendOptions) { o.exchange, o.routingKey, o.exchangeSet = exchange, routingKey, true }
}

// WithPriority sets the message priority 0..9 (0, the default, is served first on Redis).
func WithPriority(p int) SendOption { return func(o *sendOptions) { o.priority = p } }

// WithCountdown delays execution by d from now (turned into an eta, as Celery does).
func WithCountdown(d time.Duration) SendOption { return func(o *sendOptions) { o.countdown = &d } }

// WithETA runs the task not before t.
func WithETA(t time.Time) SendOption { return func(o *sendOptions) { o.eta = &t } }

// WithExpires revokes the task if it has not started by t.
func WithExpires(t time.Time) SendOption {
	return func(o *sendOptions) { o.expires = &t; o.expiresIn = nil }
}

// WithExpiresIn revokes the task if it has not started d from now (Celery's numeric expires).
func WithExpiresIn(d time.Duration) SendOption {
	return func(o *sendOptions) { o.expiresIn = &d; o.expires = nil }
}

// WithTimeLimit sets the hard time limit (Celery's time_limit).
func WithTimeLimit(d time.Duration) SendOption {
	return func(o *sendOptions) { s := d.Seconds(); o.timeLimit.Hard = &s }
}

// WithSoftTimeLimit sets the soft time limit (Celery's soft_time_limit).
func WithSoftTimeLimit(d time.Duration) SendOption {
	return func(o *sendOptions) { s := d.Seconds(); o.timeLimit.Soft = &s }
}

// WithRetries sets the retries header (how many times the task was already retried).
func WithRetries(n int) SendOption { return func(o *sendOptions) { o.retries = n } }

// WithIgnoreResult asks the worker not to store the task's SUCCESS result.
func WithIgnoreResult() SendOption { return func(o *sendOptions) { o.ignoreResult = true } }

// WithHeaders adds custom headers (Celery's apply_async(headers=...)); they reach the worker's
// request. Values must be JSON-encodable.
func WithHeaders(h map[string]any) SendOption {
	return func(o *sendOptions) {
		if o.headers == nil {
			o.headers = map[string]any{}
		}
		for k, v := range h {
			o.headers[k] = v
		}
	}
}

// WithShadow sets the display name shown in logs and events instead of the task name.
func WithShadow(name string) SendOption { return func(o *sendOptions) { o.shadow = name } }

// WithLink adds success callbacks: each runs with this task's result prepended to its args
// (unless immutable).
func WithLink(sigs ...Signature) SendOption {
	return func(o *sendOptions) { o.link = append(o.link, sigs...) }
}

// WithLinkError adds error callbacks, published with the failed task's id as their argument.
func WithLinkError(sigs ...Signature) SendOption {
	return func(o *sendOptions) { o.linkError = append(o.linkError, sigs...) }
}

// WithChain sets the rest of a chain, in forward order: after this task succeeds, the first of
// sigs runs with its result, and so on. SendChain is the usual entry point.
func WithChain(sigs ...Signature) SendOption {
	return func(o *sendOptions) { o.chain = append([]Signature(nil), sigs...) }
}

// WithParent sets parent_id and root_id (workflow lineage). An empty rootID defaults to the
// task's own id.
func WithParent(parentID, rootID string) SendOption {
	return func(o *sendOptions) { o.parentID, o.rootID = parentID, rootID }
}

// WithGroup marks the task as member index of group groupID (index may be nil).
func WithGroup(groupID string, index *int) SendOption {
	return func(o *sendOptions) { o.groupID, o.groupIndex = groupID, index }
}

// WithChord attaches the chord body to run when the group completes.
func WithChord(body Signature) SendOption { return func(o *sendOptions) { o.chord = &body } }

// WithProtocol writes this message in protocol 1 or 2 regardless of the producer default.
func WithProtocol(p int) SendOption { return func(o *sendOptions) { o.protocol = p } }

// NewSignature returns a task signature (Celery's name.s(*args, **kwargs)).
func NewSignature(task string, args []any, kwargs map[string]any) Signature {
	return Signature{Task: task, Args: args, Kwargs: kwargs, Options: map[string]any{}}
}

// TaskRequest is one task to send in a batch.
type TaskRequest struct {
	Name    string
	Args    []any
	Kwargs  map[string]any
	Options []SendOption
}

// Send publishes task name with args and kwargs and returns a handle to its result (unbound to a
// backend when the producer has none: its methods then return ErrInvalidConfig).
func (p *Producer) Send(ctx context.Context, name string, args []any, kwargs map[string]any, opts ...SendOption) (*AsyncResult, error) {
	res, errs := p.SendBatch(ctx, []TaskRequest{{Name: name, Args: args, Kwargs: kwargs, Options: opts}})
	return res[0], errs[0]
}

// SendBatch publishes many tasks in one Redis pipeline. Results and errors are aligned with
// reqs: errs[i] is nil when reqs[i] was published.
func (p *Producer) SendBatch(ctx context.Context, reqs []TaskRequest) ([]*AsyncResult, []error) {
	results := make([]*AsyncResult, len(reqs))
	errs := make([]error, len(reqs))
	msgs := make([]*Message, 0, len(reqs))
	idx := make([]int, 0, len(reqs))
	for i, r := range reqs {
		m, err := p.Build(r.Name, r.Args, r.Kwargs, r.Options...)
		if err == nil {
			err = p.runHooks(ctx, p.cfg.BeforeTaskPublish, m)
		}
		if err != nil {
			errs[i] = err
			continue
		}
		msgs = append(msgs, m)
		idx = append(idx, i)
	}
	for j, err := range p.broker.PublishBatch(ctx, msgs) {
		i := idx[j]
		if err != nil {
			errs[i] = err
			continue
		}
		results[i] = p.resultFor(msgs[j].ID)
		if err := p.runHooks(ctx, p.cfg.AfterTaskPublish, msgs[j]); err != nil {
			errs[i] = fmt.Errorf("after_task_publish for %s (the task was published): %w", msgs[j].ID, err)
		}
	}
	return results, errs
}

func (p *Producer) resultFor(id string) *AsyncResult {
	if p.cfg.Backend != nil {
		return AsyncResultOn(p.cfg.Backend, id)
	}
	return &AsyncResult{ID: id}
}

func (p *Producer) runHooks(ctx context.Context, hooks []PublishHook, m *Message) error {
	for _, h := range hooks {
		if err := h(ctx, m); err != nil {
			return fmt.Errorf("publish hook for task %s: %w", m.ID, err)
		}
	}
	return nil
}

// SendChain publishes a chain: sigs[0] runs first and each next signature receives the previous
// result prepended to its args (unless immutable). Task ids are assigned up front (taken from a
// signature's options["task_id"] when present), and the returned handle is the last task's.
func (p *Producer) SendChain(ctx context.Context, sigs []Signature, opts ...SendOption) (*AsyncResult, error) {
	if len(sigs) == 0 {
		return nil, fmt.Errorf("%w: empty chain", ErrInvalidConfig)
	}
	ids := make([]string, len(sigs))
	frozen := make([]Signature, len(sigs))
	for i, s := range sigs {
		s.Options = cloneMap(s.Options)
		id, _ := s.Options["task_id"].(string)
		if id == "" {
			id = uuid.NewString()
		}
		s.Options["task_id"] = id
		s.Options["reply_to"] = p.replyTo
		ids[i], frozen[i] = id, s
	}
	first := frozen[0]
	all := []SendOption{WithTaskID(ids[0]), WithChain(frozen[1:]...)}
	if q, _ := first.Options["queue"].(string); q != "" {
		all = append(all, WithQueue(q))
	}
	all = append(all, opts...) // explicit options win
	if _, err := p.Send(ctx, first.Task, first.Args, first.Kwargs, all...); err != nil {
		return nil, err
	}
	return p.resultFor(ids[len(ids)-1]), nil
}

func cloneMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m)+2)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Build makes the message Send would publish, without publishing it.
func (p *Producer) Build(name string, args []any, kwargs map[string]any, opts ...SendOption) (*Message, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: empty task name", ErrInvalidConfig)
	}
	o := sendOptions{}
	for _, opt := range opts {
		opt(&o)
	}
	if o.priority < 0 || o.priority > 9 {
		return nil, fmt.Errorf("%w: priority %d (want 0..9)", ErrInvalidConfig, o.priority)
	}
	now := p.now()
	id := o.taskID
	if id == "" {
		id = uuid.NewString()
	}
	if args == nil {
		args = []any{}
	}
	if kwargs == nil {
		kwargs = map[string]any{}
	}
	m := &Message{
		Protocol: p.cfg.Protocol, Lang: "go", Task: name, ID: id, Shadow: o.shadow,
		Group: o.groupID, GroupIndex: o.groupIndex, Retries: o.retries, TimeLimit: o.timeLimit,
		RootID: o.rootID, ParentID: o.parentID, Origin: p.cfg.Origin, IgnoreResult: o.ignoreResult,
		UTC: true, Args: args, Kwargs: kwargs,
		CorrelationID: id, ReplyTo: p.replyTo, DeliveryMode: 2, DeliveryTag: uuid.NewString(),
		Priority: o.priority, BodyEncoding: "base64",
	}
	if o.protocol != 0 {
		m.Protocol = o.protocol
	}
	if m.RootID == "" {
		m.RootID = id
	}
	switch {
	case o.eta != nil:
		t := o.eta.UTC()
		m.ETA = &t
	case o.countdown != nil:
		t := now.Add(*o.countdown).UTC()
		m.ETA = &t
	}
	var expiresIn time.Duration
	switch {
	case o.expires != nil:
		t := o.expires.UTC()
		m.Expires, expiresIn = &t, t.Sub(now)
	case o.expiresIn != nil:
		t := now.Add(*o.expiresIn).UTC()
		m.Expires, expiresIn = &t, *o.expiresIn
	}
	if m.Expires != nil {
		m.Expiration = strconv.FormatInt(max(0, expiresIn.Milliseconds()), 10)
	}
	if o.exchangeSet {
		m.DeliveryInfo = DeliveryInfo{Exchange: o.exchange, RoutingKey: o.routingKey}
	} else {
		q := o.queue
		if q == "" {
			q = p.cfg.DefaultQueue
		}
		m.DeliveryInfo = DeliveryInfo{Exchange: "", RoutingKey: q}
	}
	if len(o.link) > 0 {
		m.Embed.Callbacks = o.link
	}
	if len(o.linkError) > 0 {
		m.Embed.Errbacks = o.linkError
	}
	if o.chain != nil {
		rev := make([]Signature, len(o.chain))
		for i, s := range o.chain {
			rev[len(o.chain)-1-i] = s
		}
		m.Embed.Chain = rev
	}
	m.Embed.Chord = o.chord
	if len(o.headers) > 0 {
		m.ExtraHeaders = make(map[string]json.RawMessage, len(o.headers))
		for k, v := range o.headers {
			if reservedHeader(k) {
				return nil, fmt.Errorf("%w: custom header %q collides with a Celery header", ErrInvalidConfig, k)
			}
			raw, err := p.broker.Codec().MarshalValue(v)
			if err != nil {
				return nil, fmt.Errorf("custom header %q: %w", k, err)
			}
			m.ExtraHeaders[k] = raw
		}
	}
	m.ArgsRepr, m.KwargsRepr = protocol.ArgsRepr(args), protocol.PyRepr(kwargs)
	return m, nil
}

var reservedHeaders = map[string]bool{
	"lang": true, "task": true, "id": true, "shadow": true, "eta": true, "expires": true,
	"group": true, "group_index": true, "retries": true, "timelimit": true, "root_id": true,
	"parent_id": true, "argsrepr": true, "kwargsrepr": true, "origin": true, "ignore_result": true,
	"stamped_headers": true, "stamps": true, "replaced_task_nesting": true, "compression": true,
	"redelivered": true,
}

func reservedHeader(k string) bool { return reservedHeaders[k] }

// reflectNil reports whether t is an interface holding a nil *Broker, the one nil a caller of
// the old *Broker signatures could pass.
func reflectNil(t Transport) bool {
	b, ok := t.(*Broker)
	return ok && b == nil
}
