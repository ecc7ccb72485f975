package celerycompat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

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
	// ("/<db>.celeryev"). Take it from RedisURL.DB.
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
	return c, nil
}

// DeclareQueue binds queue the way Celery declares its default queues: exchange and routing key
// named after the queue (set _kombu.binding.<queue>, member "<queue>\x06\x16\x06\x16<queue>"), so
// publishes through exchange <queue> and kombu's restore of such messages find it.
func (b *Broker) DeclareQueue(ctx context.Context, queue string) error {
	if queue == "" {
		return fmt.Errorf("%w: empty queue name", ErrInvalidConfig)
	}
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Do("SADD", b.keys.Binding(queue), BindingMember(queue, "", queue)); err != nil {
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
	step := PriorityStep(m.Priority)
	if ex == "" {
		return []string{b.keys.Queue(rk, step)}, nil
	}
	members, err := redis.Strings(c.Do("SMEMBERS", b.keys.Binding(ex)))
	if err != nil {
		return nil, fmt.Errorf("%w: read bindings of exchange %s: %w", ErrBroker, ex, err)
	}
	var lists []string
	for _, mem := range members {
		parts := strings.SplitN(mem, Sep, 3)
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

// PublishBatch publishes msgs in one pipeline. The returned slice has one entry per message, nil
// for those that were published; it is never shorter than msgs.
func (b *Broker) PublishBatch(ctx context.Context, msgs []*Message) []error {
	errs := make([]error, len(msgs))
	if len(msgs) == 0 {
		return errs
	}
	fail := func(err error) []error {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = err
			}
		}
		return errs
	}
	c, err := b.conn(ctx)
	if err != nil {
		return fail(err)
	}
	defer c.Close()

	type pending struct {
		idx     int
		replies int
	}
	sent := make([]pending, 0, len(msgs))
	var newQueues []string
	for i, m := range msgs {
		raw, err := b.codec.Encode(m)
		if err != nil {
			errs[i] = fmt.Errorf("publish task %s: %w", m.ID, err)
			continue
		}
		lists, err := b.route(c, m)
		if err != nil {
			errs[i] = fmt.Errorf("publish task %s: %w", m.ID, err)
			continue
		}
		n := 0
		if q := queueOf(m); q != "" {
			if _, ok := b.declared.Load(q); !ok {
				if err := c.Send("SADD", b.keys.Binding(q), BindingMember(q, "", q)); err != nil {
					return fail(fmt.Errorf("%w: publish: %w", ErrBroker, err))
				}
				newQueues = append(newQueues, q)
				n++
			}
		}
		for _, l := range lists {
			if err := c.Send("LPUSH", l, raw); err != nil {
				return fail(fmt.Errorf("%w: publish: %w", ErrBroker, err))
			}
			n++
		}
		sent = append(sent, pending{i, n})
	}
	if len(sent) == 0 {
		return errs
	}
	if err := c.Flush(); err != nil {
		return fail(fmt.Errorf("%w: publish: %w", ErrBroker, err))
	}
	for _, p := range sent {
		for r := 0; r < p.replies; r++ {
			if _, err := c.Receive(); err != nil && errs[p.idx] == nil {
				errs[p.idx] = fmt.Errorf("%w: publish task %s: %w", ErrBroker, msgs[p.idx].ID, err)
				var rerr redis.Error
				if !errors.As(err, &rerr) { // connection broken: the rest did not go out
					return fail(errs[p.idx])
				}
			}
		}
	}
	for _, q := range newQueues {
		b.declared.Store(q, struct{}{})
	}
	return errs
}

// QueueLengths returns the length of each priority list of queue, keyed by step (0, 3, 6, 9).
func (b *Broker) QueueLengths(ctx context.Context, queue string) (map[int]int, error) {
	c, err := b.conn(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	for _, s := range PrioritySteps {
		if err := c.Send("LLEN", b.keys.Queue(queue, s)); err != nil {
			return nil, fmt.Errorf("%w: llen %s: %w", ErrBroker, queue, err)
		}
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("%w: llen %s: %w", ErrBroker, queue, err)
	}
	out := make(map[int]int, len(PrioritySteps))
	for _, s := range PrioritySteps {
		n, err := redis.Int(c.Receive())
		if err != nil {
			return nil, fmt.Errorf("%w: llen %s: %w", ErrBroker, queue, err)
		}
		out[s] = n
	}
	return out, nil
}
