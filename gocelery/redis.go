package gocelery

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/celerycompat/protocol"
	"github.com/gomodule/redigo/redis"
)

// RedisCeleryBroker is a Celery broker on Redis: kombu's Redis transport as celerycompat
// implements it (binding, priority lists, unacked records, restore). Build it with
// NewRedisBroker or as a literal with Pool set; the engine is made on first use. It is safe for
// concurrent use once its fields are set.
type RedisCeleryBroker struct {
	*redis.Pool
	// QueueName is the queue tasks are sent to and served from ("celery" by NewRedisBroker;
	// empty means "celery").
	QueueName string
	// Protocol is the task message protocol Delay writes: 2 (the default, what Celery 4+ sends)
	// or 1 (what gocelery wrote, for Celery 3 workers).
	Protocol int
	// VisibilityTimeout is kombu's visibility_timeout: how long a message taken by a worker that
	// then died waits in the unacked records before a restore sweep (any worker's, Python or Go)
	// puts it back. Zero means kombu's default, one hour. Every worker on the queues must agree.
	VisibilityTimeout time.Duration

	once     sync.Once
	initErr  error
	broker   *celerycompat.Broker
	producer *celerycompat.Producer
}

// NewRedisBroker returns a broker on pool, serving queue "celery". The caller owns the pool.
func NewRedisBroker(conn *redis.Pool) *RedisCeleryBroker {
	return &RedisCeleryBroker{Pool: conn, QueueName: celerycompat.DefaultQueue}
}

// NewRedisCeleryBroker returns a broker on a new pool dialling uri.
//
// Deprecated: build the pool yourself and use NewRedisBroker, so that you own and close it.
func NewRedisCeleryBroker(uri string) *RedisCeleryBroker {
	return NewRedisBroker(NewRedisPool(uri))
}

// NewRedisPool returns a redigo pool dialling uri (a redis:// URL), keeping up to three idle
// connections for four minutes and checking each with PING when it is borrowed.
//
// Deprecated: build the pool yourself, so that you own and close it.
func NewRedisPool(uri string) *redis.Pool {
	return &redis.Pool{
		MaxIdle:     3,
		IdleTimeout: 4 * time.Minute,
		Dial:        func() (redis.Conn, error) { return redis.DialURL(uri) },
		TestOnBorrow: func(c redis.Conn, _ time.Time) error {
			_, err := c.Do("PING")
			return err
		},
	}
}

func (cb *RedisCeleryBroker) queue() string {
	if cb.QueueName == "" {
		return celerycompat.DefaultQueue
	}
	return cb.QueueName
}

// engine builds the celerycompat broker and producer on first use.
func (cb *RedisCeleryBroker) engine(ctx context.Context) (*celerycompat.Broker, *celerycompat.Producer, error) {
	cb.once.Do(func() {
		if cb.Pool == nil {
			cb.initErr = fmt.Errorf("%w: RedisCeleryBroker has no Pool", ErrConfig)
			return
		}
		db, err := poolDB(ctx, cb.Pool)
		if err != nil {
			cb.initErr = err
			return
		}
		cb.broker, err = celerycompat.NewBroker(cb.Pool, celerycompat.BrokerConfig{DB: db, VisibilityTimeout: cb.VisibilityTimeout})
		if err != nil {
			cb.initErr = fmt.Errorf("gocelery: broker: %w", err)
			return
		}
		protocol := cb.Protocol
		if protocol == 0 {
			protocol = 2
		}
		cb.producer, cb.initErr = celerycompat.NewProducer(cb.broker, celerycompat.ProducerConfig{
			DefaultQueue: cb.queue(),
			Protocol:     protocol,
		})
	})
	return cb.broker, cb.producer, cb.initErr
}

// transportFor gives CeleryWorker the engine's broker (engineBroker).
func (cb *RedisCeleryBroker) transportFor(ctx context.Context) (celerycompat.Transport, error) {
	broker, _, err := cb.engine(ctx)
	if err != nil {
		return nil, err
	}
	return broker, nil
}

// poolDB asks Redis which database the pool's connections select (CLIENT INFO, Redis 6.2+),
// because the broker names its fanout channels after it and checks it. Older servers do not
// answer; their database is taken as 0, which is what a URL without a path selects.
func poolDB(ctx context.Context, pool *redis.Pool) (int, error) {
	conn, err := pool.GetContext(ctx)
	if err != nil {
		return 0, fmt.Errorf("gocelery: connect to redis: %w", err)
	}
	defer conn.Close()
	info, err := redis.String(conn.Do("CLIENT", "INFO"))
	if err != nil {
		var rerr redis.Error
		if errors.As(err, &rerr) {
			return 0, nil // no CLIENT INFO before Redis 6.2
		}
		return 0, fmt.Errorf("gocelery: connect to redis: %w", err)
	}
	for _, field := range strings.Fields(info) {
		if v, ok := strings.CutPrefix(field, "db="); ok {
			if n, err := strconv.Atoi(v); err == nil {
				return n, nil
			}
		}
	}
	return 0, nil
}

// SendCeleryMessage publishes a message whose body is a protocol 1 task (TaskMessage.Encode),
// through kombu's transport: the queue's binding is declared and the priority honoured. The
// task goes to QueueName, with its id, args, kwargs, ETA and expiry; the envelope's other
// fields are rebuilt as Celery writes them.
func (cb *RedisCeleryBroker) SendCeleryMessage(message *CeleryMessage) error {
	return sendCeleryMessage(message, cb.send)
}

// taskOptions turns a TaskMessage's id, retries, ETA and expiry into send options.
func taskOptions(tm *TaskMessage) ([]celerycompat.SendOption, error) {
	var opts []celerycompat.SendOption
	if tm.ID != "" {
		opts = append(opts, celerycompat.WithTaskID(tm.ID))
	}
	if tm.Retries != 0 {
		opts = append(opts, celerycompat.WithRetries(tm.Retries))
	}
	if tm.ETA != nil && *tm.ETA != "" {
		eta, err := protocol.ParsePyTime(*tm.ETA)
		if err != nil {
			return nil, fmt.Errorf("gocelery: task %s: eta %q: %w", tm.ID, *tm.ETA, err)
		}
		opts = append(opts, celerycompat.WithETA(eta))
	}
	if tm.Expires != nil {
		opts = append(opts, celerycompat.WithExpires(*tm.Expires))
	}
	return opts, nil
}

func (cb *RedisCeleryBroker) send(ctx context.Context, task string, args []any, kwargs map[string]any, opts ...celerycompat.SendOption) (string, error) {
	_, producer, err := cb.engine(ctx)
	if err != nil {
		return "", err
	}
	res, err := producer.Send(ctx, task, args, kwargs, append(opts, celerycompat.WithQueue(cb.queue()))...)
	if err != nil {
		return "", fmt.Errorf("gocelery: send %s: %w", task, err)
	}
	return res.ID, nil
}

// GetTaskMessage takes one task from QueueName without waiting: (nil, nil) when the queue is
// empty. The message is acknowledged before it is returned, so the caller owns it (at most
// once). CeleryWorker does not use this path on a RedisCeleryBroker: it runs the engine's worker,
// which acknowledges after the result is stored. A message that cannot be decoded is moved to
// the dead-letter list and reported as an error wrapping ErrUnsupportedMessage.
func (cb *RedisCeleryBroker) GetTaskMessage() (*TaskMessage, error) {
	ctx := context.Background()
	broker, _, err := cb.engine(ctx)
	if err != nil {
		return nil, err
	}
	ds, err := broker.Fetch(ctx, []string{cb.queue()}, 1)
	if err != nil {
		return nil, fmt.Errorf("gocelery: fetch from %s: %w", cb.queue(), err)
	}
	if len(ds) == 0 {
		return nil, nil
	}
	d := ds[0]
	if d.Poisoned {
		return nil, fmt.Errorf("%w: %s (dead-lettered)", ErrUnsupportedMessage, d.Reason)
	}
	if d.DecodeErr != nil {
		if _, err := broker.DeadLetterDelivery(ctx, d, d.DecodeErr.Error()); err != nil {
			return nil, fmt.Errorf("gocelery: dead-letter %s: %w", d.Tag, err)
		}
		return nil, fmt.Errorf("%w: %w (dead-lettered)", ErrUnsupportedMessage, d.DecodeErr)
	}
	if err := broker.Ack(ctx, d.Tag); err != nil {
		return nil, fmt.Errorf("gocelery: ack %s: %w", d.Tag, err)
	}
	return taskMessageOf(d.Message), nil
}

// taskMessageOf gives a decoded message (either protocol) in gocelery's shape, numbers as
// encoding/json gives them (float64).
func taskMessageOf(m *celerycompat.Message) *TaskMessage {
	tm := &TaskMessage{ID: m.ID, Task: m.Task, Retries: m.Retries, Expires: m.Expires}
	tm.Args, _ = plainJSON(m.Args).([]interface{})
	if tm.Args == nil {
		tm.Args = []interface{}{}
	}
	tm.Kwargs, _ = plainJSON(m.Kwargs).(map[string]interface{})
	if tm.Kwargs == nil {
		tm.Kwargs = map[string]interface{}{}
	}
	if m.ETA != nil {
		eta := protocol.PyISOFormat(*m.ETA)
		tm.ETA = &eta
	}
	return tm
}

// RedisCeleryBackend is Celery's Redis result backend as celerycompat implements it: results
// are stored with SET and PUBLISH (so Python's AsyncResult.get() wakes), failures with their
// exception and traceback, and Get waits on the PUBLISH instead of polling. Build it with
// NewRedisBackend or as a literal with Pool set. It is safe for concurrent use once Pool is set.
type RedisCeleryBackend struct {
	*redis.Pool

	once    sync.Once
	initErr error
	backend *celerycompat.Backend
}

// NewRedisBackend returns a result backend on pool. The caller owns the pool.
func NewRedisBackend(conn *redis.Pool) *RedisCeleryBackend {
	return &RedisCeleryBackend{Pool: conn}
}

// NewRedisCeleryBackend returns a result backend on a new pool dialling uri.
//
// Deprecated: build the pool yourself and use NewRedisBackend, so that you own and close it.
func NewRedisCeleryBackend(uri string) *RedisCeleryBackend {
	return NewRedisBackend(NewRedisPool(uri))
}

func (cb *RedisCeleryBackend) engine() (*celerycompat.Backend, error) {
	cb.once.Do(func() {
		if cb.Pool == nil {
			cb.initErr = fmt.Errorf("%w: RedisCeleryBackend has no Pool", ErrConfig)
			return
		}
		cb.backend, cb.initErr = celerycompat.NewBackend(cb.Pool, celerycompat.BackendConfig{})
	})
	return cb.backend, cb.initErr
}

// Close stops the goroutine that waits for results (started by the first Get) and returns its
// connection to the pool. The pool itself stays open. gocelery had no Close; calling it is
// optional for programs that exit anyway.
func (cb *RedisCeleryBackend) Close() error {
	b, err := cb.engine()
	if err != nil {
		return err
	}
	return b.Close()
}

// GetResult reads a task's stored result without waiting. A task with no stored state yet is
// an error wrapping ErrResultNotAvailable, as in gocelery.
func (cb *RedisCeleryBackend) GetResult(taskID string) (*ResultMessage, error) {
	b, err := cb.engine()
	if err != nil {
		return nil, err
	}
	meta, err := b.GetMeta(context.Background(), taskID)
	if err != nil {
		return nil, fmt.Errorf("gocelery: get result %s: %w", taskID, err)
	}
	if meta.Status == celerycompat.StatePending {
		return nil, fmt.Errorf("%w: %s", ErrResultNotAvailable, taskID)
	}
	return resultMessageOf(meta), nil
}

// resultMessageOf gives a stored result in gocelery's shape: numbers as float64, a failure's
// result as Celery's exception object {exc_type, exc_message, exc_module}.
func resultMessageOf(meta *celerycompat.ResultMeta) *ResultMessage {
	rm := &ResultMessage{ID: meta.TaskID, Status: string(meta.Status), Children: meta.Children}
	if meta.Traceback != "" {
		rm.Traceback = meta.Traceback
	}
	if te, ok := meta.Result.(*celerycompat.TaskError); ok {
		rm.Result = map[string]interface{}{
			"exc_type": te.ExcType, "exc_message": plainJSON(te.ExcMessage), "exc_module": te.ExcModule,
		}
	} else {
		rm.Result = plainJSON(meta.Result)
	}
	if rm.Children == nil {
		rm.Children = []interface{}{}
	}
	return rm
}

// SetResult stores result for taskID with SET and PUBLISH, as a Python worker does. Its Status
// defaults to SUCCESS; a SUCCESS already stored is never overwritten.
func (cb *RedisCeleryBackend) SetResult(taskID string, result *ResultMessage) error {
	b, err := cb.engine()
	if err != nil {
		return err
	}
	if result == nil {
		return fmt.Errorf("%w: nil result for %s", ErrConfig, taskID)
	}
	meta := celerycompat.ResultMeta{TaskID: taskID, Status: celerycompat.State(result.Status), Result: result.Result, Children: result.Children}
	if meta.Status == "" {
		meta.Status = celerycompat.StateSuccess
	}
	if tb, ok := result.Traceback.(string); ok {
		meta.Traceback = tb
	}
	if _, err := b.StoreResult(context.Background(), meta); err != nil {
		return fmt.Errorf("gocelery: store result %s: %w", taskID, err)
	}
	return nil
}

// DeadLetters returns up to limit messages the worker or GetTaskMessage set aside instead of
// dropping them (undecodable, or for a task nobody registered), newest first, each with the
// reason, the queue and the raw envelope.
func (cb *RedisCeleryBroker) DeadLetters(ctx context.Context, limit int) ([]celerycompat.DeadLetter, error) {
	broker, _, err := cb.engine(ctx)
	if err != nil {
		return nil, err
	}
	dl, err := broker.DeadLetters(ctx, limit)
	if err != nil {
		return nil, fmt.Errorf("gocelery: dead letters: %w", err)
	}
	return dl, nil
}
