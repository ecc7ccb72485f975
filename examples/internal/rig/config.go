package rig

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
)

// Names shared with the Python originals (examples/python/tasks.py).
const (
	// TaskName is the Celery task every service speaks about.
	TaskName = "tasks.process_task"
	// Queue is the Celery queue the task goes to (Celery's default).
	Queue = "celery"
)

// Defaults of Config. Each one is the original rig's value unless its comment says otherwise.
const (
	// DefaultRedisURL is the broker (and result backend). The original writes redis://localhost:6379/0;
	// 127.0.0.1 avoids a localhost that resolves to ::1 first.
	DefaultRedisURL = "redis://127.0.0.1:6379/0"
	// DefaultCallbackURL is where the worker's callbacks go.
	DefaultCallbackURL = "http://127.0.0.1:8001/receive-task-result"
	// DefaultTaskSleep is how long tasks.process_task works.
	DefaultTaskSleep = time.Second
	// DefaultConcurrency is how many tasks a worker runs at once.
	DefaultConcurrency = 1
	// DefaultAPIPort and DefaultReceiverPort are the services' ports.
	DefaultAPIPort      = 8000
	DefaultReceiverPort = 8001
	// DefaultCallbackDB is the receiver's SQLite file (new: the original only printed callbacks).
	DefaultCallbackDB = "callbacks.db"
	// DefaultMaxBodyBytes bounds a submitted task body (new).
	DefaultMaxBodyBytes = 1 << 20
	// DefaultResultExpires is Celery's default result_expires (the original tasks.py sets 3600).
	DefaultResultExpires = celerycompat.DefaultResultExpires
	// DefaultShutdownTimeout bounds a graceful shutdown (new).
	DefaultShutdownTimeout = 30 * time.Second
)

// Where the services listen, and how long the worker's warm shutdown may take.
const (
	// DefaultHost is the address the HTTP services listen on: the loopback interface only, as
	// uvicorn without --host. HOST=0.0.0.0 (and ::) is the original's --host 0.0.0.0, every
	// interface, for callers on other machines.
	DefaultHost = "127.0.0.1"
	// DefaultWarmShutdownTimeout is no bound: a warm shutdown waits for the running tasks as
	// long as they take, as Celery's does; a second signal makes it cold.
	DefaultWarmShutdownTimeout = time.Duration(0)
)

// Defaults of the limits both HTTP services hold against slow, broken and hostile clients
// (new; the original had none). See the package documentation for the whole list.
const (
	// DefaultHeaderTimeout bounds reading a request's headers.
	DefaultHeaderTimeout = 5 * time.Second
	// DefaultReadTimeout bounds reading a whole request, body included: a MaxBodyBytes body
	// needs about 70 KB/s to make it.
	DefaultReadTimeout = 15 * time.Second
	// DefaultIdleTimeout is how long a kept-alive connection may wait for its next request.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultMaxHeaderBytes bounds a request's headers.
	DefaultMaxHeaderBytes = 16 << 10
	// DefaultMaxConcurrent bounds the request bodies held at once by each service.
	DefaultMaxConcurrent = 64
	// DefaultRedisTimeout bounds each Redis step of an API request.
	DefaultRedisTimeout = 2 * time.Second
)

// Config is what the three services share. Every field comes from an environment variable (see
// ConfigFromEnv) and may be overridden by a flag (see RegisterFlags). The zero value is not
// usable; start from ConfigFromEnv. A Config is a value, safe to copy.
type Config struct {
	// RedisURL is the broker: CELERY_BROKER_URL, else REDIS_URL, else DefaultRedisURL. Flag
	// -redis. CELERY_BROKER_URL comes first because Celery itself lets it override the broker
	// passed to Celery(), so the Python tasks.py sees that order whatever it reads. It may be a
	// RabbitMQ URL (amqp:// or amqps://, see BrokerIsAMQP): then the result backend, the id
	// mapping and the callback outbox live on ResultURL, which must be a Redis URL.
	RedisURL string
	// ResultURL is the result backend: CELERY_RESULT_BACKEND (which Celery, too, lets override
	// the code), else RESULT_URL, else (only when the broker is amqp://) REDIS_URL; empty means
	// RedisURL (the original uses one URL for both). The API keeps its business-id mapping here,
	// beside the results. Flag -results.
	ResultURL string
	// MasterName is the Sentinel master name for a sentinel:// RedisURL, Celery's
	// broker_transport_options={'master_name': ...}: BROKER_MASTER_NAME. Flag -master-name.
	MasterName string
	// ResultMasterName is the same for a sentinel:// result backend, Celery's
	// result_backend_transport_options master_name: RESULT_BACKEND_MASTER_NAME; empty means
	// MasterName. Flag -result-master-name.
	ResultMasterName string
	// CallbackURL is where the worker's callbacks are POSTed: CALLBACK_URL, default
	// DefaultCallbackURL. Flag -callback-url.
	CallbackURL string
	// CallbackSecret, when set, signs callbacks (worker) and requires signatures (receiver):
	// CALLBACK_SECRET. Environment only, so it does not show in ps.
	CallbackSecret string
	// TaskSleep is how long each task works: TASK_SLEEP in seconds (a float, "0" for none),
	// default DefaultTaskSleep. Flag -sleep (seconds, or a Go duration such as 250ms).
	TaskSleep time.Duration
	// Concurrency is how many tasks the worker runs at once: CONCURRENCY, default 1. Flag
	// -concurrency.
	Concurrency int
	// FailEvery makes every FailEvery-th task a worker runs fail on purpose: FAIL_EVERY, default 0
	// (never). A task whose data has "fail": true fails regardless. Flag -fail-every.
	FailEvery int
	// Port is the HTTP port: PORT; 0 means the service's own default (DefaultAPIPort,
	// DefaultReceiverPort). Flag -port.
	Port int
	// CallbackDB is the receiver's SQLite file: CALLBACK_DB, default DefaultCallbackDB;
	// ":memory:" keeps callbacks in memory only. Flag -db.
	CallbackDB string
	// MaxBodyBytes bounds a POST /submit-task body and a callback body (larger: 413). The API
	// also refuses (413) task data whose callback could outgrow it, so that every task it
	// accepts can report back: MAX_BODY_BYTES, default DefaultMaxBodyBytes. Flag -max-body.
	MaxBodyBytes int64
	// ResultExpires is Celery's result_expires for results the Go worker stores, and how long the
	// API remembers which Celery id belongs to which business id: RESULT_EXPIRES in seconds,
	// default DefaultResultExpires. Flag -result-expires.
	ResultExpires time.Duration
	// VisibilityTimeout is kombu's visibility_timeout: VISIBILITY_TIMEOUT in seconds, default
	// one hour (Celery's). Every worker on the queue, Python or Go, must use the same value.
	// Flag -visibility-timeout.
	VisibilityTimeout time.Duration
	// ShutdownTimeout bounds the HTTP services' drain on SIGINT/SIGTERM (the worker's is
	// WarmShutdownTimeout): SHUTDOWN_TIMEOUT in seconds, default DefaultShutdownTimeout. Flag
	// -shutdown-timeout.
	ShutdownTimeout time.Duration

	// Host is the address the HTTP services listen on: HOST, default DefaultHost; an IP address
	// or a host name, without the port (that is Port). Empty means every interface. Flag -host.
	Host string
	// WarmShutdownTimeout bounds the worker's warm shutdown (the first SIGINT or SIGTERM: it
	// waits for the running tasks); when it runs out, the shutdown turns cold (as at a second
	// signal: running tasks are stopped and handed back to the queue). WARM_SHUTDOWN_TIMEOUT in
	// seconds, default DefaultWarmShutdownTimeout (0: no bound). Flag -warm-shutdown-timeout.
	WarmShutdownTimeout time.Duration
	// Limits of both HTTP services (see the package documentation).

	// HeaderTimeout bounds reading a request's headers: HEADER_TIMEOUT in seconds, default
	// DefaultHeaderTimeout. Flag -header-timeout.
	HeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request: READ_TIMEOUT in seconds, default
	// DefaultReadTimeout. Flag -read-timeout.
	ReadTimeout time.Duration
	// IdleTimeout bounds a kept-alive connection's wait for its next request: IDLE_TIMEOUT in
	// seconds, default DefaultIdleTimeout. Flag -idle-timeout.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers (larger: 431): MAX_HEADER_BYTES, default
	// DefaultMaxHeaderBytes. Flag -max-header.
	MaxHeaderBytes int
	// MaxConcurrent bounds the request bodies each service reads and handles at once; more
	// wait up to HeaderTimeout for a slot, then get 503: MAX_CONCURRENT, default
	// DefaultMaxConcurrent. Flag -max-concurrent.
	MaxConcurrent int
	// RedisTimeout bounds each Redis step of an API request (a submission answers 503 after at
	// most twice this; /healthz answers within a second whatever it is): REDIS_TIMEOUT in
	// seconds, default DefaultRedisTimeout. Flag -redis-timeout.
	RedisTimeout time.Duration
}

// ConfigFromEnv reads the configuration from getenv (os.Getenv, or a map lookup in tests) and
// validates it. Unset or empty variables take the defaults above.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	first := func(names ...string) string {
		for _, n := range names {
			if v := strings.TrimSpace(getenv(n)); v != "" {
				return v
			}
		}
		return ""
	}
	or := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	cfg := Config{
		RedisURL:         or(first("CELERY_BROKER_URL", "REDIS_URL"), DefaultRedisURL),
		ResultURL:        first("CELERY_RESULT_BACKEND", "RESULT_URL"),
		CallbackURL:      or(first("CALLBACK_URL"), DefaultCallbackURL),
		MasterName:       first("BROKER_MASTER_NAME"),
		ResultMasterName: first("RESULT_BACKEND_MASTER_NAME"),
		CallbackSecret:   getenv("CALLBACK_SECRET"),
		CallbackDB:       or(first("CALLBACK_DB"), DefaultCallbackDB),
		Host:             or(first("HOST"), DefaultHost),
	}
	if cfg.ResultURL == "" && cfg.BrokerIsAMQP() {
		cfg.ResultURL = first("REDIS_URL") // RabbitMQ carries the tasks; Redis the rest
	}
	var errs []error
	parse := func(name string, def any, dst any) {
		v := first(name)
		if v == "" {
			switch d := dst.(type) {
			case *int:
				*d = def.(int)
			case *int64:
				*d = def.(int64)
			case *time.Duration:
				*d = def.(time.Duration)
			}
			return
		}
		var err error
		switch d := dst.(type) {
		case *int:
			*d, err = strconv.Atoi(v)
		case *int64:
			*d, err = strconv.ParseInt(v, 10, 64)
		case *time.Duration:
			*d, err = parseSeconds(v)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", name, v, err))
		}
	}
	parse("TASK_SLEEP", DefaultTaskSleep, &cfg.TaskSleep)
	parse("CONCURRENCY", DefaultConcurrency, &cfg.Concurrency)
	parse("FAIL_EVERY", 0, &cfg.FailEvery)
	parse("PORT", 0, &cfg.Port)
	parse("MAX_BODY_BYTES", int64(DefaultMaxBodyBytes), &cfg.MaxBodyBytes)
	parse("RESULT_EXPIRES", DefaultResultExpires, &cfg.ResultExpires)
	parse("SHUTDOWN_TIMEOUT", DefaultShutdownTimeout, &cfg.ShutdownTimeout)
	parse("VISIBILITY_TIMEOUT", celerycompat.DefaultVisibilityTimeout, &cfg.VisibilityTimeout)
	parse("WARM_SHUTDOWN_TIMEOUT", DefaultWarmShutdownTimeout, &cfg.WarmShutdownTimeout)
	parse("HEADER_TIMEOUT", DefaultHeaderTimeout, &cfg.HeaderTimeout)
	parse("READ_TIMEOUT", DefaultReadTimeout, &cfg.ReadTimeout)
	parse("IDLE_TIMEOUT", DefaultIdleTimeout, &cfg.IdleTimeout)
	parse("MAX_HEADER_BYTES", DefaultMaxHeaderBytes, &cfg.MaxHeaderBytes)
	parse("MAX_CONCURRENT", DefaultMaxConcurrent, &cfg.MaxConcurrent)
	parse("REDIS_TIMEOUT", DefaultRedisTimeout, &cfg.RedisTimeout)
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("rig: config: %w", err)
	}
	return cfg, cfg.Validate()
}

// RegisterFlags defines on fs one flag per field (but the secret), defaulting to cfg's values and
// writing into cfg, so flags override the environment:
//
//	cfg, err := rig.ConfigFromEnv(os.Getenv)
//	cfg.RegisterFlags(flag.CommandLine)
//	flag.Parse()
//	err = cfg.Validate()
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.RedisURL, "redis", c.RedisURL, "broker URL (CELERY_BROKER_URL, REDIS_URL)")
	fs.StringVar(&c.ResultURL, "results", c.ResultURL, "result backend URL; empty: the broker URL (CELERY_RESULT_BACKEND, RESULT_URL)")
	fs.StringVar(&c.MasterName, "master-name", c.MasterName, "Sentinel master name for a sentinel:// broker (BROKER_MASTER_NAME)")
	fs.StringVar(&c.ResultMasterName, "result-master-name", c.ResultMasterName, "Sentinel master name for a sentinel:// result backend; empty: -master-name (RESULT_BACKEND_MASTER_NAME)")
	fs.StringVar(&c.CallbackURL, "callback-url", c.CallbackURL, "worker: where callbacks are POSTed (CALLBACK_URL)")
	fs.Var((*seconds)(&c.TaskSleep), "sleep", "worker: seconds each task works, e.g. 0, 1.5 or 250ms (TASK_SLEEP)")
	fs.IntVar(&c.Concurrency, "concurrency", c.Concurrency, "worker: tasks run at once (CONCURRENCY)")
	fs.IntVar(&c.FailEvery, "fail-every", c.FailEvery, "worker: fail every n-th task on purpose, 0 never (FAIL_EVERY)")
	fs.IntVar(&c.Port, "port", c.Port, "HTTP port; 0: the service default (PORT)")
	fs.StringVar(&c.CallbackDB, "db", c.CallbackDB, "receiver: SQLite file, or :memory: (CALLBACK_DB)")
	fs.Int64Var(&c.MaxBodyBytes, "max-body", c.MaxBodyBytes, "largest request body in bytes (MAX_BODY_BYTES)")
	fs.Var((*seconds)(&c.ResultExpires), "result-expires", "seconds results and id mappings are kept (RESULT_EXPIRES)")
	fs.Var((*seconds)(&c.VisibilityTimeout), "visibility-timeout", "seconds before an un-acked message is restored (VISIBILITY_TIMEOUT)")
	fs.Var((*seconds)(&c.ShutdownTimeout), "shutdown-timeout", "API and receiver: seconds a graceful shutdown may take (SHUTDOWN_TIMEOUT)")
	fs.StringVar(&c.Host, "host", c.Host, "HTTP services: address to listen on; 0.0.0.0 for every interface (HOST)")
	fs.Var((*seconds)(&c.WarmShutdownTimeout), "warm-shutdown-timeout", "worker: seconds the first SIGINT/SIGTERM waits for running tasks before stopping them; 0 no bound (WARM_SHUTDOWN_TIMEOUT)")
	fs.Var((*seconds)(&c.HeaderTimeout), "header-timeout", "seconds to read a request's headers (HEADER_TIMEOUT)")
	fs.Var((*seconds)(&c.ReadTimeout), "read-timeout", "seconds to read a whole request (READ_TIMEOUT)")
	fs.Var((*seconds)(&c.IdleTimeout), "idle-timeout", "seconds a kept-alive connection may idle (IDLE_TIMEOUT)")
	fs.IntVar(&c.MaxHeaderBytes, "max-header", c.MaxHeaderBytes, "largest request header in bytes (MAX_HEADER_BYTES)")
	fs.IntVar(&c.MaxConcurrent, "max-concurrent", c.MaxConcurrent, "request bodies handled at once (MAX_CONCURRENT)")
	fs.Var((*seconds)(&c.RedisTimeout), "redis-timeout", "api: seconds each Redis step may take (REDIS_TIMEOUT)")
}

// Validate reports every field out of range.
func (c Config) Validate() error {
	var errs []error
	for _, u := range []struct{ name, v, master string }{{"redis url", c.RedisURL, c.MasterName},
		{"result url", c.ResultURL, c.resultMasterName()}} {
		if u.v == "" && u.name == "result url" {
			if c.BrokerIsAMQP() {
				errs = append(errs, errors.New("result url: an amqp:// broker needs a Redis result backend "+
					"(CELERY_RESULT_BACKEND, RESULT_URL or REDIS_URL): results, id mappings and the callback outbox live there"))
			}
			continue
		}
		if u.name == "redis url" && c.BrokerIsAMQP() {
			if _, err := url.Parse(u.v); err != nil {
				errs = append(errs, fmt.Errorf("broker url: %w", err))
			}
			continue
		}
		if p, err := celerycompat.ParseRedisURL(u.v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u.name, err))
		} else if len(p.Sentinels) > 0 && u.master == "" {
			errs = append(errs, fmt.Errorf("%s: a sentinel:// URL needs a master name (BROKER_MASTER_NAME, RESULT_BACKEND_MASTER_NAME)", u.name))
		}
	}
	if u, err := url.Parse(c.CallbackURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("callback url %q: want an absolute http(s) URL", c.CallbackURL))
	}
	if c.TaskSleep < 0 {
		errs = append(errs, fmt.Errorf("task sleep %v: must not be negative", c.TaskSleep))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("concurrency %d: must be at least 1", c.Concurrency))
	}
	if c.FailEvery < 0 {
		errs = append(errs, fmt.Errorf("fail every %d: must not be negative", c.FailEvery))
	}
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d: out of range", c.Port))
	}
	if c.CallbackDB == "" {
		errs = append(errs, errors.New("callback db: empty"))
	}
	if c.MaxBodyBytes < 1 {
		errs = append(errs, fmt.Errorf("max body bytes %d: must be positive", c.MaxBodyBytes))
	}
	if c.ResultExpires < time.Second {
		errs = append(errs, fmt.Errorf("result expires %v: must be at least 1s", c.ResultExpires))
	}
	if c.VisibilityTimeout < time.Second {
		errs = append(errs, fmt.Errorf("visibility timeout %v: must be at least 1s", c.VisibilityTimeout))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("shutdown timeout %v: must be positive", c.ShutdownTimeout))
	}
	if net.ParseIP(c.Host) == nil && strings.ContainsAny(c.Host, ":/ ") {
		errs = append(errs, fmt.Errorf("host %q: want an IP address or host name, without a port", c.Host))
	}
	if c.WarmShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("warm shutdown timeout %v: must not be negative", c.WarmShutdownTimeout))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"header timeout", c.HeaderTimeout}, {"read timeout", c.ReadTimeout}, {"idle timeout", c.IdleTimeout}, {"redis timeout", c.RedisTimeout}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s %v: must be positive", d.name, d.v))
		}
	}
	if c.MaxHeaderBytes < 1 {
		errs = append(errs, fmt.Errorf("max header bytes %d: must be positive", c.MaxHeaderBytes))
	}
	if c.MaxConcurrent < 1 {
		errs = append(errs, fmt.Errorf("max concurrent %d: must be at least 1", c.MaxConcurrent))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("rig: config: %w", err)
	}
	return nil
}

// Addr is the listen address for a service whose default port is defaultPort: "<Host>:<Port>"
// (":<Port>", every interface, when Host is empty).
func (c Config) Addr(defaultPort int) string {
	p := c.Port
	if p == 0 {
		p = defaultPort
	}
	return net.JoinHostPort(c.Host, strconv.Itoa(p))
}

// ResultsURL is the result backend URL in effect: ResultURL, or RedisURL when it is empty.
func (c Config) ResultsURL() string {
	if c.ResultURL != "" {
		return c.ResultURL
	}
	return c.RedisURL
}

// BrokerIsAMQP reports whether the broker is RabbitMQ (an amqp:// or amqps:// RedisURL): tasks go
// through package celerycompat/amqp, everything else through the Redis of ResultURL.
func (c Config) BrokerIsAMQP() bool {
	u := strings.ToLower(c.RedisURL)
	return strings.HasPrefix(u, "amqp://") || strings.HasPrefix(u, "amqps://")
}

// resultMasterName is the Sentinel master name of the result backend in effect.
func (c Config) resultMasterName() string {
	if c.ResultMasterName != "" {
		return c.ResultMasterName
	}
	return c.MasterName
}

// Redacted is a URL with its password replaced by "xxxxx", for logs.
func Redacted(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable url)"
	}
	return u.Redacted()
}

// parseSeconds reads seconds as a decimal ("1", "0.25") or, for flags, a Go duration ("250ms").
func parseSeconds(s string) (time.Duration, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		d, derr := time.ParseDuration(s)
		if derr != nil {
			return 0, errors.New("want seconds, e.g. 1 or 0.5")
		}
		return d, nil
	}
	if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > math.MaxInt64/float64(time.Second) {
		return 0, errors.New("want non-negative finite seconds")
	}
	return time.Duration(f * float64(time.Second)), nil
}

// seconds is a flag.Value for a duration written in seconds.
type seconds time.Duration

func (s *seconds) String() string {
	if s == nil {
		return "0"
	}
	return strconv.FormatFloat(time.Duration(*s).Seconds(), 'f', -1, 64)
}

func (s *seconds) Set(v string) error {
	d, err := parseSeconds(strings.TrimSpace(v))
	if err != nil {
		return err
	}
	*s = seconds(d)
	return nil
}
