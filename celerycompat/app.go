package celerycompat

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Config configures an App, with the names of Celery's settings. BrokerURL or Transport is
// required (exactly one of them).
type Config struct {
	// BrokerURL is Celery's broker_url: redis://[:password@]host[:port][/db] or rediss://…
	// (unix sockets as redis+socket:///path?virtual_host=db). The broker database number used
	// for the fanout channels (remote control, revokes, events) is taken from it. For RabbitMQ
	// (amqp://) use package celerycompat/amqp's NewApp, or set Transport instead.
	BrokerURL string
	// Transport is the broker when it is not Redis: a Transport the caller built, such as
	// package celerycompat/amqp's (amqp.New). The App sends and hands out workers through it and
	// does not close it (the caller does, after the App). Set it instead of BrokerURL; then
	// GlobalKeyPrefix and VisibilityTimeout, which are Redis transport options, are not read, and
	// Broker returns ErrUnsupportedTransport (Control works when the transport carries remote
	// control, as amqp's does: a FanoutTransport).
	//
	// It is a field, not a URL scheme New dials itself, because package amqp imports this package
	// (it implements Transport with this package's types), so this package cannot import it.
	Transport Transport
	// ResultBackend is Celery's result_backend, a Redis URL as BrokerURL; empty stores no
	// results (Celery's default DisabledBackend). For rpc:// use package celerycompat/amqp's
	// NewApp, which builds Results.
	ResultBackend string
	// Results is a result backend the caller built, such as package celerycompat/amqp's rpc://
	// one. The App reads results from it and hands it to its workers and producers; it does not
	// close it. Set it or ResultBackend, not both.
	Results ResultBackend
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
	// SentinelFanoutCompat is broker_transport_options["sentinel_fanout_compat"] (kombu 5.7):
	// on Sentinel, also publish and listen on the broadcast channels Celery 5.2 and 5.3 use (see
	// BrokerConfig.SentinelFanoutCompat).
	SentinelFanoutCompat bool
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
	cfg       Config
	pools     []*redis.Pool
	transport Transport
	broker    *Broker       // nil when the transport is not Redis
	backend   *Backend      // nil without ResultBackend
	results   ResultBackend // backend, or Config.Results; nil without either
	producer  *Producer

	closeOnce sync.Once
	closeErr  error
}

// New returns an App for cfg. It opens no connection yet (Celery connects lazily too): a wrong
// address shows on the first Send or Run. Close it when done.
//
// With cfg.Transport instead of a BrokerURL, the App runs on that transport (RabbitMQ through
// package celerycompat/amqp); the result backend stays the Redis one of ResultBackend.
func New(cfg Config) (*App, error) {
	hasTransport := cfg.Transport != nil && !reflectNil(cfg.Transport)
	switch {
	case cfg.BrokerURL == "" && !hasTransport:
		return nil, fmt.Errorf("%w: BrokerURL (or Transport) is required", ErrInvalidConfig)
	case cfg.BrokerURL != "" && hasTransport:
		return nil, fmt.Errorf("%w: BrokerURL and Transport are both set; set one", ErrInvalidConfig)
	}
	if cfg.Results != nil && nilBackend(cfg.Results) {
		cfg.Results = nil
	}
	if cfg.Results != nil && cfg.ResultBackend != "" {
		return nil, fmt.Errorf("%w: ResultBackend and Results are both set; set one", ErrInvalidConfig)
	}
	if cfg.PoolLimit < 0 {
		return nil, fmt.Errorf("%w: negative PoolLimit", ErrInvalidConfig)
	}
	limit := cfg.PoolLimit
	a := &App{cfg: cfg}
	codec := Codec{PeerVersion: cfg.PeerVersion}
	if hasTransport {
		a.transport = cfg.Transport
		a.broker, _ = cfg.Transport.(*Broker)
	} else {
		bu, err := ParseRedisURL(cfg.BrokerURL)
		if err != nil {
			return nil, fmt.Errorf("broker_url: %w", err)
		}
		bpool := bu.NewPool(limit)
		a.pools = append(a.pools, bpool)
		a.broker, err = NewBroker(bpool, BrokerConfig{GlobalKeyPrefix: cfg.GlobalKeyPrefix, DB: bu.DB,
			VisibilityTimeout: cfg.VisibilityTimeout, SentinelFanoutCompat: cfg.SentinelFanoutCompat,
			Codec: codec, Logger: cfg.Logger})
		if err != nil {
			a.closePools()
			return nil, err
		}
		a.transport = a.broker
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
	a.results = cfg.Results
	if a.backend != nil {
		a.results = a.backend
	}
	var err error
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
// has no result backend.
func (a *App) AsyncResult(id string) *AsyncResult {
	if a.results == nil {
		return nil
	}
	return AsyncResultOn(a.results, id)
}

// Producer returns a producer on the app's broker; cfg.Backend defaults to the app's backend.
func (a *App) Producer(cfg ProducerConfig) (*Producer, error) {
	if cfg.Backend == nil {
		cfg.Backend = a.results
	}
	return NewProducer(a.transport, cfg)
}

// Worker returns a worker on the app's broker (what `celery -A app worker` starts); register
// handlers on it, then Run it. cfg.Backend defaults to the app's backend and cfg.Logger to the
// app's logger. Stop the worker before closing the app.
func (a *App) Worker(cfg WorkerConfig) (*Worker, error) {
	if cfg.Backend == nil {
		cfg.Backend = a.results
	}
	if cfg.Logger == nil {
		cfg.Logger = a.cfg.Logger
	}
	return NewWorker(a.transport, cfg)
}

// Control returns a remote-control client (app.control: inspect, ping, revoke, rate_limit…).
// Remote control runs over Redis only so far: on another transport it returns an error wrapping
// ErrUnsupportedTransport.
func (a *App) Control(cfg ControlConfig) (*Control, error) {
	if _, ok := a.transport.(FanoutTransport); !ok && a.broker == nil {
		return nil, fmt.Errorf("%w: %T carries no remote control (not a FanoutTransport)", ErrUnsupportedTransport, a.transport)
	}
	if cfg.Logger == nil {
		cfg.Logger = a.cfg.Logger
	}
	return NewControl(a.transport, cfg)
}

// Broker returns the app's Redis broker, for the lower-level API; on another transport (see
// Config.Transport) it returns an error wrapping ErrUnsupportedTransport: use Transport.
func (a *App) Broker() (*Broker, error) {
	if a.broker == nil {
		return nil, fmt.Errorf("%w: the app's transport is %T, not the Redis *Broker", ErrUnsupportedTransport, a.transport)
	}
	return a.broker, nil
}

// Transport returns the transport the app sends and works through: its *Broker on Redis, else
// Config.Transport.
func (a *App) Transport() Transport { return a.transport }

// Backend returns the app's Redis result backend, nil without ResultBackend (with Results, see
// ResultStore).
func (a *App) Backend() *Backend { return a.backend }

// ResultStore returns the app's result backend, whichever it is (Backend or Config.Results), nil
// without one.
func (a *App) ResultStore() ResultBackend { return a.results }

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
