package rig

import (
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestConfigFromEnv(t *testing.T) {
	defaults := Config{
		RedisURL: DefaultRedisURL, CallbackURL: DefaultCallbackURL, TaskSleep: time.Second,
		Concurrency: 1, CallbackDB: "callbacks.db", MaxBodyBytes: 1 << 20,
		ResultExpires: 24 * time.Hour, ShutdownTimeout: 30 * time.Second, VisibilityTimeout: time.Hour,
		Host:          "127.0.0.1",
		HeaderTimeout: DefaultHeaderTimeout, ReadTimeout: DefaultReadTimeout, IdleTimeout: DefaultIdleTimeout,
		MaxHeaderBytes: DefaultMaxHeaderBytes, MaxConcurrent: DefaultMaxConcurrent, RedisTimeout: DefaultRedisTimeout,
	}
	with := func(f func(*Config)) Config { c := defaults; f(&c); return c }
	tests := []struct {
		name string
		env  env
		want Config
	}{
		{"defaults", env{}, defaults},
		{"REDIS_URL", env{"REDIS_URL": "redis://h:1/2"}, with(func(c *Config) { c.RedisURL = "redis://h:1/2" })},
		{"CELERY_BROKER_URL", env{"CELERY_BROKER_URL": "redis://b/3"}, with(func(c *Config) { c.RedisURL = "redis://b/3" })},
		{"CELERY_BROKER_URL first, as in Celery", env{"REDIS_URL": "redis://a", "CELERY_BROKER_URL": "redis://b"},
			with(func(c *Config) { c.RedisURL = "redis://b" })},
		{"CELERY_RESULT_BACKEND first", env{"CELERY_RESULT_BACKEND": "redis://r/1", "RESULT_URL": "redis://x"},
			with(func(c *Config) { c.ResultURL = "redis://r/1" })},
		{"RESULT_URL", env{"RESULT_URL": "redis://x/4"}, with(func(c *Config) { c.ResultURL = "redis://x/4" })},
		{"amqp broker, REDIS_URL for the rest", env{"CELERY_BROKER_URL": "amqp://guest:guest@h:5672/v", "REDIS_URL": "redis://r/5"},
			with(func(c *Config) { c.RedisURL, c.ResultURL = "amqp://guest:guest@h:5672/v", "redis://r/5" })},
		{"amqp broker, CELERY_RESULT_BACKEND first", env{"CELERY_BROKER_URL": "amqps://h/v", "REDIS_URL": "redis://r/5", "CELERY_RESULT_BACKEND": "redis://b/6"},
			with(func(c *Config) { c.RedisURL, c.ResultURL = "amqps://h/v", "redis://b/6" })},
		{"everything", env{"CALLBACK_URL": "http://cb:9/x", "CALLBACK_SECRET": "s", "TASK_SLEEP": "0.25",
			"CONCURRENCY": "4", "FAIL_EVERY": "10", "PORT": "9000", "CALLBACK_DB": ":memory:",
			"MAX_BODY_BYTES": "100", "RESULT_EXPIRES": "3600", "SHUTDOWN_TIMEOUT": "1.5", "VISIBILITY_TIMEOUT": "5"},
			with(func(c *Config) {
				c.CallbackURL, c.CallbackSecret, c.TaskSleep = "http://cb:9/x", "s", 250*time.Millisecond
				c.Concurrency, c.FailEvery, c.Port, c.CallbackDB = 4, 10, 9000, ":memory:"
				c.MaxBodyBytes, c.ResultExpires, c.ShutdownTimeout = 100, time.Hour, 1500*time.Millisecond
				c.VisibilityTimeout = 5 * time.Second
			})},
		{"zero sleep", env{"TASK_SLEEP": "0"}, with(func(c *Config) { c.TaskSleep = 0 })},
		{"every interface", env{"HOST": "0.0.0.0"}, with(func(c *Config) { c.Host = "0.0.0.0" })},
		{"IPv6 any", env{"HOST": "::"}, with(func(c *Config) { c.Host = "::" })},
		{"warm shutdown bound", env{"WARM_SHUTDOWN_TIMEOUT": "2.5"}, with(func(c *Config) { c.WarmShutdownTimeout = 2500 * time.Millisecond })},
		{"limits", env{"HEADER_TIMEOUT": "1", "READ_TIMEOUT": "2.5", "IDLE_TIMEOUT": "3", "MAX_HEADER_BYTES": "8192",
			"MAX_CONCURRENT": "8", "REDIS_TIMEOUT": "0.5"},
			with(func(c *Config) {
				c.HeaderTimeout, c.ReadTimeout, c.IdleTimeout = time.Second, 2500*time.Millisecond, 3*time.Second
				c.MaxHeaderBytes, c.MaxConcurrent, c.RedisTimeout = 8192, 8, 500*time.Millisecond
			})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ConfigFromEnv(tt.env.get)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		env  env
		want string
	}{
		{env{"TASK_SLEEP": "abc"}, "TASK_SLEEP"},
		{env{"TASK_SLEEP": "-1"}, "TASK_SLEEP"},
		{env{"TASK_SLEEP": "NaN"}, "TASK_SLEEP"},
		{env{"CONCURRENCY": "0"}, "concurrency 0"},
		{env{"CONCURRENCY": "x"}, "CONCURRENCY"},
		{env{"FAIL_EVERY": "-2"}, "fail every"},
		{env{"PORT": "70000"}, "port 70000"},
		{env{"REDIS_URL": "http://nope"}, "redis url"},
		{env{"RESULT_URL": "mysql://x"}, "result url"},
		{env{"CELERY_BROKER_URL": "amqp://h/v"}, "needs a Redis result backend"},
		{env{"CELERY_BROKER_URL": "amqp://h/v", "RESULT_URL": "amqp://h/v"}, "result url"},
		{env{"CALLBACK_URL": "/relative"}, "callback url"},
		{env{"MAX_BODY_BYTES": "0"}, "max body"},
		{env{"RESULT_EXPIRES": "0.5"}, "result expires"},
		{env{"HOST": "0.0.0.0:8000"}, "without a port"},
		{env{"WARM_SHUTDOWN_TIMEOUT": "-1"}, "WARM_SHUTDOWN_TIMEOUT"},
		{env{"READ_TIMEOUT": "0"}, "read timeout"},
		{env{"REDIS_TIMEOUT": "0"}, "redis timeout"},
		{env{"MAX_CONCURRENT": "0"}, "max concurrent"},
		{env{"MAX_HEADER_BYTES": "0"}, "max header"},
	}
	for _, tt := range tests {
		_, err := ConfigFromEnv(tt.env.get)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: error %v, want one mentioning %q", tt.env, err, tt.want)
		}
	}
}

func TestConfigFlagsOverrideEnv(t *testing.T) {
	cfg, err := ConfigFromEnv(env{"TASK_SLEEP": "2", "PORT": "9000", "REDIS_URL": "redis://a"}.get)
	if err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	if err := fs.Parse([]string{"-sleep", "250ms", "-redis", "redis://b/1", "-concurrency", "3"}); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.TaskSleep != 250*time.Millisecond || cfg.RedisURL != "redis://b/1" || cfg.Concurrency != 3 || cfg.Port != 9000 {
		t.Errorf("after flags: %+v", cfg)
	}
	if got := fs.Lookup("sleep").DefValue; got != "2" {
		t.Errorf("-sleep default shown as %q, want the environment's 2", got)
	}
	if cfg.Addr(DefaultAPIPort) != "127.0.0.1:9000" || (Config{}).Addr(DefaultReceiverPort) != ":8001" {
		t.Errorf("Addr: %q %q", cfg.Addr(DefaultAPIPort), (Config{}).Addr(DefaultReceiverPort))
	}
	if cfg.ResultsURL() != "redis://b/1" {
		t.Errorf("ResultsURL without a result URL: %q", cfg.ResultsURL())
	}
}

func TestRedacted(t *testing.T) {
	for in, want := range map[string]string{
		"redis://:secret@h:6379/0": "redis://:xxxxx@h:6379/0",
		"redis://u:secret@h/1":     "redis://u:xxxxx@h/1",
		"redis://127.0.0.1:6379/0": "redis://127.0.0.1:6379/0",
		"unix:///tmp/r.sock?db=2":  "unix:///tmp/r.sock?db=2",
	} {
		if got := Redacted(in); got != want {
			t.Errorf("Redacted(%q) = %q, want %q", in, got, want)
		}
	}
}
