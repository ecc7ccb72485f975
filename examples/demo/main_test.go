package main

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/internal/celerytest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	celerytest.StopSharedRabbitMQ()
	os.Exit(code)
}

func TestParseFlags(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	tests := []struct {
		name    string
		args    []string
		env     func(string) string
		want    options
		wantErr string
	}{
		{name: "defaults", env: env(), want: options{n: 1000, concurrency: 1, timeout: 2 * time.Minute, progress: true}},
		{name: "environment", env: env("TASK_SLEEP", "0.005", "CONCURRENCY", "4", "REDIS_URL", "redis://h:1/2"),
			want: options{n: 1000, sleep: 5 * time.Millisecond, concurrency: 4, timeout: 2 * time.Minute, progress: true, redisURL: "redis://h:1/2"}},
		{name: "flags win", args: []string{"-sleep", "1ms", "-concurrency", "2", "-n", "10"}, env: env("TASK_SLEEP", "3", "CONCURRENCY", "4"),
			want: options{n: 10, sleep: time.Millisecond, concurrency: 2, timeout: 2 * time.Minute, progress: true}},
		{name: "original", args: []string{"-original", "-sleep", "0", "-concurrency", "8"}, env: env("TASK_SLEEP", "0"),
			want: options{n: 1000, sleep: time.Second, concurrency: 1, timeout: 45 * time.Minute, original: true, progress: true}},
		{name: "original, shorter", args: []string{"-original", "-n", "20", "-timeout", "1m"}, env: env(),
			want: options{n: 20, sleep: time.Second, concurrency: 1, timeout: time.Minute, original: true, progress: true}},
		{name: "bad TASK_SLEEP", env: env("TASK_SLEEP", "soon"), wantErr: "TASK_SLEEP"},
		{name: "bad CONCURRENCY", env: env("CONCURRENCY", "0"), wantErr: "CONCURRENCY"},
		{name: "bad n", args: []string{"-n", "0"}, env: env(), wantErr: "-n"},
		{name: "extra argument", args: []string{"now"}, env: env(), wantErr: "unexpected"},
		{name: "amqp broker", env: env("CELERY_BROKER_URL", "amqp://guest:guest@h:5672/v"),
			want: options{n: 1000, concurrency: 1, timeout: 2 * time.Minute, progress: true, brokerURL: "amqp://guest:guest@h:5672/v"}},
		{name: "redis in CELERY_BROKER_URL", env: env("CELERY_BROKER_URL", "redis://h:1/2"), wantErr: "want an amqp:// URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlags(tt.args, tt.env, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestDemoRabbitMQ runs the demo with its tasks over a real RabbitMQ (CELERY_BROKER_URL), the
// results and the callback outbox on the embedded Redis: every task once, every callback.
func TestDemoRabbitMQ(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: needs rabbitmq-server")
	}
	v := celerytest.SharedRabbitMQ(t).VHost(t)
	var stdout, stderr strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := func(k string) string {
		if k == "CELERY_BROKER_URL" {
			return v.URL()
		}
		return ""
	}
	code := run(ctx, []string{"-n", "200", "-progress=false", "-concurrency", "4"}, env, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	for _, want := range []string{
		"demo: broker: RabbitMQ at amqp://guest:xxxxx@",
		"demo: redis (results, callback outbox): embedded Redis (miniredis",
		"CONSISTENT: submitted = processed = callbacks received = 200",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}
	if qs := v.Queues(t); qs["celery"].Ready != 0 || qs["celery"].Unacked != 0 {
		t.Errorf("queue celery after the demo: %+v, want empty", qs["celery"])
	}
}

// TestDemo runs the demo in this process on the embedded Redis, smaller than the default.
func TestDemo(t *testing.T) {
	var stdout, stderr strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := run(ctx, []string{"-n", "200", "-progress=false"}, func(string) string { return "" }, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	for _, want := range []string{
		"demo: 200 tasks, each working 0s (TASK_SLEEP=0), worker concurrency 1 (one at a time, as the original)",
		"embedded Redis (miniredis",
		"succeeded:    200",
		"CONSISTENT: submitted = processed = callbacks received = 200",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}
	if stderr.Len() > 0 {
		t.Errorf("stderr: %s", stderr.String())
	}
}

// TestDemoInconsistent: a run that cannot finish in time exits 1 with the report.
func TestDemoInconsistent(t *testing.T) {
	var stdout, stderr strings.Builder
	code := run(context.Background(), []string{"-n", "5", "-sleep", "1s", "-timeout", "1500ms", "-progress=false"},
		func(string) string { return "" }, &stdout, &stderr)
	if code != 1 || !strings.Contains(stdout.String(), "INCONSISTENT") || !strings.Contains(stdout.String(), "timed out") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
}
