package celerycompat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat/internal/rdb"

	"github.com/gomodule/redigo/redis"
)

// DefaultVisibilityTimeout is kombu's visibility_timeout: an un-acked message older than this is
// restored to its queue by the next sweep.
const DefaultVisibilityTimeout = time.Hour

// BrokerConfig configures a Broker. The zero value matches a default Celery deployment on
// database 0.
type BrokerConfig struct {
	// GlobalKeyPrefix is kombu's global_keyprefix transport option (default none).
	GlobalKeyPrefix string
	// DB is the broker database number from the URL; it names the fanout channels
	// ("/<db>.celeryev"). Take it from RedisURL.DB. On Redis 6.2+ the first connection checks it
	// against the database the pool selects and a mismatch fails every call with ErrInvalidConfig.
	DB int
	// VisibilityTimeout is kombu's visibility_timeout (default 1 h). Every worker sharing the
	// queues, Python or Go, must use the same value.
	VisibilityTimeout time.Duration
	// Codec encodes what the broker writes and decodes what it reads (default: Celery 5.2 wire
	// format).
	Codec Codec
	// Logger receives broker diagnostics; nil is silent.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// WaitReplicas, when positive, makes every publish wait (Redis WAIT) until that many replicas
	// hold the message, at most WaitTimeout (default 1 s). Redis replicates asynchronously: without
	// it a master that dies right after a publish can take the message with it. A publish fewer
	// replicas confirmed fails with ErrNotReplicated although the master has it (publish again:
	// at least once). See sentinel.go for the guarantee and its cost.
	WaitReplicas int
	WaitTimeout  time.Duration
	// SentinelFanoutCompat is kombu 5.7's sentinel_fanout_compat transport option, for Sentinel
	// deployments with peers on kombu before 5.4 (Celery 5.2 and 5.3), which name the broadcast
	// channels "/{db}.<exchange>" literally instead of "/<db>.<exchange>": remote control
	// requests and events are published on both, the worker's mailbox listens on both, and a
	// request that arrives on both runs once (by its delivery tag, as kombu does). Set it on
	// every Go worker and control client of such a deployment while old peers remain.
	SentinelFanoutCompat bool
	// ClientSideDeadline turns off the server-side check of a publish's deadline. By default a
	// publish whose ctx has a deadline runs as one script that compares Redis's clock (TIME) with
	// that deadline and pushes nothing once it has passed: each message then fails with
	// ErrDeadlinePassed, and a publish that reached a Redis which then hung, and that Redis runs
	// only after the caller gave up, queues nothing. Without a deadline, or with this set, the
	// publish is the plain pipeline kombu sends: it waits for Redis's reply as long as the
	// pool's read timeout allows (ctx's deadline does not bound it), and Redis runs it whenever
	// it gets to it, so a publish that failed with a timeout may still be queued later.
	//
	// The check assumes the clocks of this process and Redis agree to well within the time the
	// deadline leaves (NTP keeps them within milliseconds): a Redis clock ahead by d refuses
	// publishes with less than d left, one behind by d lets a publish run up to d late. Set this
	// when they may not agree, or when the Redis user may not run scripts (EVALSHA).
	//
	// On by default because a deadline says "by then or not at all": without the check, a
	// publish that timed out is often queued anyway, and a caller that reports the failure or
	// sends again gets a task run that it was told failed, or twice. The cost, measured with
	// BenchmarkPublish (one goroutine, loopback redis-server, 2 CPU cores shared with other
	// work): single sends about 10-15% fewer per second, batches of 1000 about 40% fewer (Redis
	// copies each envelope into Lua and back), still some 60 times Python's apply_async.
	ClientSideDeadline bool
}

// Broker publishes Celery task messages to Redis lists the way kombu's Redis transport does, and
// (for workers) fetches, acknowledges and restores them. A Broker is safe for concurrent use.
type Broker struct {
	pool  Pool
	cfg   BrokerConfig
	keys  Keys
	codec Codec
	log   *slog.Logger
	now   func() time.Time

	declared sync.Map // queue name -> struct{}: binding written by this Broker
	db       dbCheck  // BrokerConfig.DB against the pool's database, checked once
	acks     ackGroup // concurrent Acks share round trips (ackgroup.go)
}

// NewBroker returns a broker on pool, which the caller owns.
func NewBroker(pool Pool, cfg BrokerConfig) (*Broker, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: nil pool", ErrInvalidConfig)
	}
	if cfg.VisibilityTimeout < 0 {
		return nil, fmt.Errorf("%w: negative visibility timeout", ErrInvalidConfig)
	}
	if cfg.VisibilityTimeout == 0 {
		cfg.VisibilityTimeout = DefaultVisibilityTimeout
	}
	if cfg.DB < 0 {
		return nil, fmt.Errorf("%w: negative DB", ErrInvalidConfig)
	}
	b := &Broker{pool: pool, cfg: cfg, codec: cfg.Codec, log: cfg.Logger, now: cfg.Now,
		keys: Keys{Prefix: cfg.GlobalKeyPrefix, DB: cfg.DB}}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.now == nil {
		b.now = time.Now
	}
	return b, nil
}

// Keys returns the key builder the broker uses.
func (b *Broker) Keys() Keys { return b.keys }

// Codec returns the broker's codec.
func (b *Broker) Codec() Codec { return b.codec }

// VisibilityTimeout returns the configured visibility timeout.
func (b *Broker) VisibilityTimeout() time.Duration { return b.cfg.VisibilityTimeout }

func (b *Broker) conn(ctx context.Context) (redis.Conn, error) {
	c, err := b.pool.GetContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: get connection: %w", ErrBroker, err)
	}
	if err := b.db.verify(c, b.cfg.DB); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// DeclareQueue binds queue the way Celery declares its default queues: exchange and routing key
// named after the queue (set _kombu.binding.<queue>, member "<queue>\x06\x16\x06\x16<queue>", and
// the same member in kombu 5.7's _kombu.binding_permanent.<queue>), so publishes through exchange
// <queue> and kombu's restore of such messages find it.
func (b *Broker) DeclareQueue(ctx context.Context, queue string) error {
	if queue == "" {
		return fmt.Errorf("%w: empty queue name", ErrInvalidConfig)
	}
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := rdb.DeclareQueue(ctx, c, b.keys, queue); err != nil {
		return fmt.Errorf("%w: declare queue %s: %w", ErrBroker, queue, err)
	}
	b.declared.Store(queue, struct{}{})
	return nil
}

// route resolves a message's exchange and routing key to the lists it goes to (kombu's _lookup):
// the anonymous exchange "" routes to the list named by the routing key; any other exchange is
// treated as direct and resolved through its binding set. No match is ErrNoRoute (kombu drops the
// message silently).
func (b *Broker) route(c redis.Conn, m *Message) ([]string, error) {
	ex, rk := m.DeliveryInfo.Exchange, m.DeliveryInfo.RoutingKey
	step := priorityStep(m.Priority)
	if ex == "" {
		return []string{b.keys.Queue(rk, step)}, nil
	}
	members, err := rdb.Bindings(c, b.keys, ex)
	if err != nil {
		return nil, fmt.Errorf("%w: read bindings of exchange %s: %w", ErrBroker, ex, err)
	}
	var lists []string
	for _, mem := range members {
		parts := strings.SplitN(mem, rdb.Sep, 3)
		if len(parts) == 3 && parts[0] == rk {
			lists = append(lists, b.keys.Queue(parts[2], step))
		}
	}
	if len(lists) == 0 {
		return nil, fmt.Errorf("%w: exchange %q routing key %q", ErrNoRoute, ex, rk)
	}
	return lists, nil
}

// queueOf is the queue a message lands in, for the one-time binding declaration.
func queueOf(m *Message) string {
	if m.DeliveryInfo.Exchange == "" {
		return m.DeliveryInfo.RoutingKey
	}
	return ""
}

// Publish encodes m and pushes it onto its queue (LPUSH: the head, so consumers popping the tail
// see FIFO order). The first publish to a queue also declares its binding, as kombu does.
func (b *Broker) Publish(ctx context.Context, m *Message) error {
	return b.PublishBatch(ctx, []*Message{m})[0]
}

// publishRetries is how many times a publish is retried after a connection error, as Celery's
// default retry policy (task_publish_retry, max_retries 3) does. Like Celery's, a retry after a
// connection that broke mid-reply can publish a message twice: delivery is at least once.
const publishRetries = 3

// PublishBatch publishes msgs in one pipeline. The returned slice has one entry per message, nil
// for those that were published; it is never shorter than msgs. Messages whose connection broke
// before Redis answered are retried on a new connection up to three times (Celery's default
// publish retry policy).
//
// When ctx has a deadline, Redis checks it too (unless BrokerConfig.ClientSideDeadline): the
// batch is one script that pushes nothing once Redis's clock has passed the deadline, and its
// messages fail with ErrDeadlinePassed. A publish that times out on this side is then queued
// only if Redis ran it before the deadline.
func (b *Broker) PublishBatch(ctx context.Context, msgs []*Message) []error {
	errs := make([]error, len(msgs))
	todo := make([]int, 0, len(msgs))
	encoded := make([][]byte, len(msgs))
	for i, m := range msgs {
		raw, err := b.codec.Encode(m)
		if err != nil {
			errs[i] = fmt.Errorf("publish task %s: %w", m.ID, err)
			continue
		}
		encoded[i] = raw
		todo = append(todo, i)
	}
	for attempt := 0; len(todo) > 0; attempt++ {
		retry := b.publishOnce(ctx, msgs, encoded, todo, errs)
		if len(retry) == 0 || attempt == publishRetries || ctx.Err() != nil {
			break
		}
		for _, i := range retry {
			errs[i] = nil
		}
		todo = retry
		select {
		case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	return errs
}

// publishOnce sends the messages todo on one connection, setting errs. It returns the indices
// that failed on a broken connection (worth retrying on a new one).
func (b *Broker) publishOnce(ctx context.Context, msgs []*Message, encoded [][]byte, todo []int, errs []error) (retry []int) {
	c, err := b.conn(ctx)
	if err != nil {
		for _, i := range todo {
			errs[i] = err
		}
		return todo
	}
	defer c.Close()
	broken := func(from int, err error) []int {
		for _, i := range todo[from:] {
			if errs[i] == nil {
				errs[i] = fmt.Errorf("%w: publish task %s: %w", ErrBroker, msgs[i].ID, err)
				retry = append(retry, i)
			}
		}
		return retry
	}
	pushes := make([]rdb.Push, 0, len(todo))
	sent := make([]int, 0, len(todo)) // index into todo of each push
	for k, i := range todo {
		m := msgs[i]
		lists, err := b.route(c, m)
		if err != nil {
			errs[i] = fmt.Errorf("publish task %s: %w", m.ID, err)
			if errors.Is(err, ErrBroker) && !rdb.IsReply(err) {
				return broken(k, err)
			}
			continue
		}
		p := rdb.Push{Raw: encoded[i], Lists: lists}
		if q := queueOf(m); q != "" {
			if _, ok := b.declared.Load(q); !ok {
				p.Declare = q
			}
		}
		pushes = append(pushes, p)
		sent = append(sent, k)
	}
	var perr []error
	var brokenAt int
	var berr error
	if deadline, ok := ctx.Deadline(); ok && !b.cfg.ClientSideDeadline {
		perr, brokenAt, berr = rdb.PushAllBefore(c, b.keys, pushes, deadline, deadline.Sub(b.now()))
	} else {
		perr, brokenAt, berr = rdb.PushAll(c, b.keys, pushes)
	}
	for j, k := range sent[:brokenAt] {
		i := todo[k]
		switch {
		case errors.Is(perr[j], rdb.ErrPastDeadline):
			errs[i] = fmt.Errorf("%w: publish task %s: %w (%w)", ErrBroker, msgs[i].ID, ErrDeadlinePassed, context.DeadlineExceeded)
		case perr[j] != nil:
			errs[i] = fmt.Errorf("%w: publish task %s: %w", ErrBroker, msgs[i].ID, perr[j])
		}
	}
	if brokenAt < len(pushes) {
		return broken(sent[brokenAt], berr)
	}
	if b.cfg.WaitReplicas > 0 {
		b.waitReplicas(ctx, c, msgs, todo, errs)
	}
	// A queue is declared once a push that carried its binding succeeded: one that failed (an
	// error reply, a deadline passed) may not have written it.
	for j, p := range pushes {
		if p.Declare != "" && perr[j] == nil {
			b.declared.Store(p.Declare, struct{}{})
		}
	}
	return nil
}

// QueueLengths returns the length of each priority list of queue, keyed by step (0, 3, 6, 9).
func (b *Broker) QueueLengths(ctx context.Context, queue string) (map[int]int, error) {
	c, err := b.conn(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	lists := make([]string, 0, len(rdb.PrioritySteps))
	for _, s := range rdb.PrioritySteps {
		lists = append(lists, b.keys.Queue(queue, s))
	}
	ns, err := rdb.QueueLengths(c, lists)
	if err != nil {
		return nil, fmt.Errorf("%w: llen %s: %w", ErrBroker, queue, err)
	}
	out := make(map[int]int, len(rdb.PrioritySteps))
	for i, s := range rdb.PrioritySteps {
		out[s] = ns[i]
	}
	return out, nil
}
