package rig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/celerycompat/amqp"
)

// poolSize bounds the connections of each pool OpenDeps makes; callers beyond it wait.
const poolSize = 64

// Deps are the resources a service uses but does not own.
type Deps struct {
	// Broker reaches Config.RedisURL: queues, the callback outbox. Required. The caller owns it
	// (a *redis.Pool from celerycompat.RedisURL.NewPool does). With Transport set it is the
	// Redis of the result backend, and holds the callback outbox only.
	Broker celerycompat.Pool
	// Transport, when set, carries the tasks instead of the Redis broker on Broker: RabbitMQ
	// through package celerycompat/amqp when Config.RedisURL is amqp://. The caller owns it.
	Transport celerycompat.Transport
	// Results reaches the result backend (Config.ResultsURL) and holds the API's id mapping. nil
	// means Broker.
	Results celerycompat.Pool
	// Logger receives the services' logs; nil is silent.
	Logger *slog.Logger
	// Sleep is how the worker's task waits TaskSleep; it must return ctx's error when ctx ends
	// first. nil is a timer that does so. Tests inject a gate here.
	Sleep func(ctx context.Context, d time.Duration) error
}

func (d Deps) results() celerycompat.Pool {
	if d.Results != nil {
		return d.Results
	}
	return d.Broker
}

// transport is what tasks travel through: Transport, else a Redis broker on Broker.
func (d Deps) transport(cfg Config, log *slog.Logger) (celerycompat.Transport, *celerycompat.Broker, error) {
	if d.Transport != nil {
		b, _ := d.Transport.(*celerycompat.Broker)
		return d.Transport, b, nil
	}
	db, err := brokerDB(cfg)
	if err != nil {
		return nil, nil, err
	}
	b, err := celerycompat.NewBroker(d.Broker, celerycompat.BrokerConfig{DB: db, VisibilityTimeout: cfg.VisibilityTimeout, Logger: log})
	if err != nil {
		return nil, nil, fmt.Errorf("rig: broker: %w", err)
	}
	return b, b, nil
}

func (d Deps) logger() *slog.Logger {
	if d.Logger != nil {
		return d.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (d Deps) check() error {
	if d.Broker == nil {
		return errors.New("rig: Deps.Broker is nil")
	}
	return nil
}

// OpenDeps opens the pools cfg names: one for the broker and, when the result backend is another
// URL, one for it. A connection that sat idle, or predates a broken one (Redis restarted), is
// PINGed before use, within a deadline, so stale connections do not fail requests. It does not
// dial; the services start while Redis is down and answer 503 until
// it is back. close closes what OpenDeps opened.
//
// With an amqp:// broker it does not connect either: the transport is lazy (amqp.Config.Lazy),
// so the API starts while RabbitMQ is down and answers 503 until it is back, and the worker
// keeps retrying, as with Redis. It opens one pool, for the Redis result backend, which also
// holds the callback outbox.
func OpenDeps(cfg Config, logger *slog.Logger) (d Deps, close func() error, err error) {
	if cfg.BrokerIsAMQP() {
		return openAMQPDeps(cfg, logger)
	}
	bu, err := celerycompat.ParseRedisURL(cfg.RedisURL)
	if err != nil {
		return Deps{}, nil, fmt.Errorf("rig: broker url: %w", err)
	}
	bu.MasterName = cfg.MasterName
	broker := newCheckedPool(bu, poolSize)
	d = Deps{Broker: broker, Logger: logger}
	if cfg.ResultsURL() == cfg.RedisURL && cfg.resultMasterName() == cfg.MasterName {
		return d, broker.Close, nil
	}
	ru, err := celerycompat.ParseRedisURL(cfg.ResultsURL())
	if err != nil {
		broker.Close()
		return Deps{}, nil, fmt.Errorf("rig: result url: %w", err)
	}
	ru.MasterName = cfg.resultMasterName()
	results := newCheckedPool(ru, poolSize)
	d.Results = results
	return d, func() error { return errors.Join(broker.Close(), results.Close()) }, nil
}

func openAMQPDeps(cfg Config, logger *slog.Logger) (Deps, func() error, error) {
	ru, err := celerycompat.ParseRedisURL(cfg.ResultsURL())
	if err != nil {
		return Deps{}, nil, fmt.Errorf("rig: result url: %w", err)
	}
	ru.MasterName = cfg.resultMasterName()
	tr, err := amqp.New(context.Background(), amqp.Config{URL: cfg.RedisURL, Lazy: true, Logger: logger})
	if err != nil {
		return Deps{}, nil, fmt.Errorf("rig: broker: %w", err)
	}
	results := newCheckedPool(ru, poolSize)
	d := Deps{Broker: results, Transport: tr, Logger: logger}
	return d, func() error { return errors.Join(tr.Close(), results.Close()) }, nil
}

// brokerDB is the database number of the broker URL (Celery names its fanout channels after it).
func brokerDB(cfg Config) (int, error) {
	u, err := celerycompat.ParseRedisURL(cfg.RedisURL)
	if err != nil {
		return 0, fmt.Errorf("rig: broker url: %w", err)
	}
	return u.DB, nil
}
