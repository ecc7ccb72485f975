package rig

import (
	"errors"
	"flag"
	"fmt"
	"math"
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

// Config is what the three services share. Every field comes from an environment variable (see
// ConfigFromEnv) and may be overridden by a flag (see RegisterFlags). The zero value is not
// usable; start from ConfigFromEnv. A Config is a value, safe to copy.
type Config struct {
	// RedisURL is the broker: CELERY_BROKER_URL, else REDIS_URL, else DefaultRedisURL. Flag
	// -redis. CELERY_BROKER_URL comes first because Celery itself lets it override the broker
	// passed to Celery(), so the Python tasks.py sees that order whatever it reads.
	RedisURL string
	// ResultURL is the result backend: CELERY_RESULT_BACKEND (which Celery, too, lets override
	// the code), else RESULT_URL; empty means
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
	// MaxBodyBytes bounds a POST /submit-task body (larger: 413) and a callback body:
	// MAX_BODY_BYTES, default DefaultMaxBodyBytes. Flag -max-body.
	MaxBodyBytes int64
	// ResultExpires is Celery's result_expires for results the Go worker stores, and how long the
	// API remembers which Celery id belongs to which business id: RESULT_EXPIRES in seconds,
	// default DefaultResultExpires. Flag -result-expires.
	ResultExpires time.Duration
	// VisibilityTimeout is kombu's visibility_timeout: VISIBILITY_TIMEOUT in seconds, default
	// one hour (Celery's). Every worker on the queue, Python or Go, must use the same value.
	// Flag -visibility-timeout.
	VisibilityTimeout time.Duration
	// ShutdownTimeout bounds the drain on SIGINT/SIGTERM: SHUTDOWN_TIMEOUT in seconds, default
	// DefaultShutdownTimeout. Flag -shutdown-timeout.
	ShutdownTimeout time.Duration
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
	fs.Var((*seconds)(&c.ShutdownTimeout), "shutdown-timeout", "seconds a graceful shutdown may take (SHUTDOWN_TIMEOUT)")
}

// Validate reports every field out of range.
func (c Config) Validate() error {
	var errs []error
	for _, u := range []struct{ name, v, master string }{{"redis url", c.RedisURL, c.MasterName},
		{"result url", c.ResultURL, c.resultMasterName()}} {
		if u.v == "" && u.name == "result url" {
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
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("rig: config: %w", err)
	}
	return nil
}

// Addr is the listen address for a service whose default port is defaultPort: ":<Port>", on
// every interface like the original uvicorn --host 0.0.0.0.
func (c Config) Addr(defaultPort int) string {
	p := c.Port
	if p == 0 {
		p = defaultPort
	}
	return ":" + strconv.Itoa(p)
}

// ResultsURL is the result backend URL in effect: ResultURL, or RedisURL when it is empty.
func (c Config) ResultsURL() string {
	if c.ResultURL != "" {
		return c.ResultURL
	}
	return c.RedisURL
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
