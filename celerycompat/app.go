package celerycompat

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Config configures an App, with the names of Celery's settings. Only BrokerURL is required.
type Config struct {
	// BrokerURL is Celery's broker_url: redis://[:password@]host[:port][/db] or rediss://…
	// (unix sockets as redis+socket:///path?virtual_host=db). The broker database number used
	// for the fanout channels (remote control, revokes, events) is taken from it.
	BrokerURL string
	// ResultBackend is Celery's result_backend, a Redis URL as BrokerURL; empty stores no
	// results (Celery's default DisabledBackend).
	ResultBackend string
	// PeerVersion is the oldest Celery, Python side, that reads what this app writes (messages,
	// results, control replies, events): it picks the wire format in every one of them. Zero
	// means 5.2, which every supported Celery reads.
	PeerVersion Version
	// GlobalKeyPrefix is broker_transport_options["global_keyprefix"].
	GlobalKeyPrefix string
	// ResultKeyPrefix is result_backend_transport_options["global_keyprefix"] (Celery >= 5.3).
	ResultKeyPrefix string
	// VisibilityTimeout is broker_transport_options["visibility_timeout"] (default 1 h).
	VisibilityTimeout time.Duration
	// ResultExpires is result_expires (default 24 h; negative: never).
	ResultExpires time.Duration
	// ResultExtended is result_extended.
	ResultExtended bool
	// Timezone is Celery's timezone, used for date_done when PeerVersion >= 5.5; nil means UTC.
	Timezone *time.Location
	// PoolLimit bounds the connections each of the app's two pools opens (0, the default:
	// unbounded, as redigo's). A worker needs about one per concurrent task plus three; a
	// limit below that makes its tasks wait for connections.
	PoolLimit int
	// Logger receives the logs of the app and of the workers it makes; nil is silent.
	Logger *slog.Logger
}

// App is the Go side of a Celery app, `app = Celery(broker=…, backend=…)`: built from the
// broker and result backend URLs, it owns its Redis pools, sends tasks, reads results, hands
// out workers, producers and remote-control clients bound to them, and is closed once. It is
// safe for concurrent use.
//
// It is named App because that is what Celery's documentation calls the Celery instance ("the
// application", `app = Celery(...)`, `app.send_task`, `app.AsyncResult`, `app.control`); the
// Go constructor is New, so `celerycompat.New(celerycompat.Config{...})` reads as the Python
// line does. Users who bring their own pool use NewBroker, NewBackend, NewProducer and NewWorker.
type App struct {
	cfg      Config
	pools    []*redis.Pool
	broker   *Broker
	backend  *Backend // nil without ResultBackend
	producer *Producer

	closeOnce sync.Once
	closeErr  error
}

// New returns an App for cfg. It opens no connection yet (Celery connects lazily too): a wrong
// address shows on the first Send or Run. Close it when done.
func New(cfg Config) (*App, error) {
	if cfg.BrokerURL == "" {
		return nil, fmt.Errorf("%w: BrokerURL is required", ErrInvalidConfig)
	}
	if cfg.PoolLimit < 0 {
		return nil, fmt.Errorf("%w: negative PoolLimit", ErrInvalidConfig)
	}
	limit := cfg.PoolLimit
	bu, err := ParseRedisURL(cfg.BrokerURL)
	if err != nil {
		return nil, fmt.Errorf("broker_url: %w", err)
	}
	a := &App{cfg: cfg}
	codec := Codec{PeerVersion: cfg.PeerVersion}
	bpool := bu.NewPool(limit)
	a.pools = append(a.pools, bpool)
	a.broker, err = NewBroker(bpool, BrokerConfig{GlobalKeyPrefix: cfg.GlobalKeyPrefix, DB: bu.DB,
		VisibilityTimeout: cfg.VisibilityTimeout, Codec: codec, Logger: cfg.Logger})
	if err != nil {
		a.closePools()
		return nil, err
	}
	if cfg.ResultBackend != "" {
		ru, err := ParseRedisURL(cfg.ResultBackend)
		if err != nil {
			a.closePools()
			return nil, fmt.Errorf("result_backend: %w", err)
		}
		rpool := ru.NewPool(limit)
		a.pools = append(a.pools, rpool)
		a.backend, err = NewBackend(rpool, BackendConfig{Keys: Keys{ResultPrefix: cfg.ResultKeyPrefix},
			ResultExpires: cfg.ResultExpires, PeerVersion: cfg.PeerVersion, Timezone: cfg.Timezone,
			ResultExtended: cfg.ResultExtended, Codec: codec, Logger: cfg.Logger})
		if err != nil {
			a.closePools()
			return nil, err
		}
	}
	if a.producer, err = a.Producer(ProducerConfig{}); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// Send sends task name with args and kwargs, as app.send_task does, and returns the handle on
// its result (usable when the app has a ResultBackend).
func (a *App) Send(ctx context.Context, name string, args []any, kwargs map[string]any, opts ...SendOption) (*AsyncResult, error) {
	return a.producer.Send(ctx, name, args, kwargs, opts...)
}

// AsyncResult returns a handle on the result of task id (app.AsyncResult), or nil when the app
// has no ResultBackend.
func (a *App) AsyncResult(id string) *AsyncResult {
	if a.backend == nil {
		return nil
	}
	return a.backend.AsyncResult(id)
}

// Producer returns a producer on the app's broker; cfg.Backend defaults to the app's backend.
func (a *App) Producer(cfg ProducerConfig) (*Producer, error) {
	if cfg.Backend == nil {
		cfg.Backend = a.backend
	}
	return NewProducer(a.broker, cfg)
}

// Worker returns a worker on the app's broker (what `celery -A app worker` starts); register
// handlers on it, then Run it. cfg.Backend defaults to the app's backend and cfg.Logger to the
// app's logger. Stop the worker before closing the app.
func (a *App) Worker(cfg WorkerConfig) (*Worker, error) {
	if cfg.Backend == nil {
		cfg.Backend = a.backend
	}
	if cfg.Logger == nil {
		cfg.Logger = a.cfg.Logger
	}
	return NewWorker(a.broker, cfg)
}

// Control returns a remote-control client (app.control: inspect, ping, revoke, rate_limit…).
func (a *App) Control(cfg ControlConfig) (*Control, error) {
	if cfg.Logger == nil {
		cfg.Logger = a.cfg.Logger
	}
	return NewControl(a.broker, cfg)
}

// Broker returns the app's broker, for the lower-level API.
func (a *App) Broker() *Broker { return a.broker }

// Backend returns the app's result backend, nil without ResultBackend.
func (a *App) Backend() *Backend { return a.backend }

// Close stops the result backend's listener and closes the app's pools. Stop the workers first.
// Only the first call does anything; later calls return its result.
func (a *App) Close() error {
	a.closeOnce.Do(func() {
		if a.backend != nil {
			a.closeErr = a.backend.Close()
		}
		if err := a.closePools(); err != nil && a.closeErr == nil {
			a.closeErr = err
		}
	})
	return a.closeErr
}

func (a *App) closePools() error {
	var first error
	for _, p := range a.pools {
		if err := p.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
