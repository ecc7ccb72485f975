package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
	"github.com/gomodule/redigo/redis"
)

// TestRetryTransport drives the retrying transport against a server that answers 503 a given
// number of times before 200, with the waits recorded instead of slept.
func TestRetryTransport(t *testing.T) {
	now := time.Now().Truncate(time.Second) // whole seconds, as an HTTP date
	tests := []struct {
		name       string
		failures   int    // 503 answers before the 200
		retryAfter string // the 503's header
		max        int
		deadline   time.Duration // 0: none
		status     int           // the caller's answer
		waits      []time.Duration
		gaveUp     int64
	}{
		{name: "seconds", failures: 1, retryAfter: "2", max: 5, status: 200, waits: []time.Duration{2 * time.Second}},
		{name: "http date", failures: 2, retryAfter: now.Add(3 * time.Second).Format(http.TimeFormat), max: 5, status: 200,
			waits: []time.Duration{3 * time.Second, 3 * time.Second}},
		{name: "no header", failures: 1, max: 5, status: 200, waits: []time.Duration{defaultRetryWait}},
		{name: "unreadable header", failures: 1, retryAfter: "soon", max: 5, status: 200, waits: []time.Duration{defaultRetryWait}},
		{name: "capped", failures: 1, retryAfter: "3600", max: 5, status: 200, waits: []time.Duration{maxRetryWait}},
		{name: "bounded", failures: 10, retryAfter: "1", max: 3, status: 503,
			waits: []time.Duration{time.Second, time.Second, time.Second}, gaveUp: 1},
		{name: "no time left", failures: 1, retryAfter: "5", max: 5, deadline: 2 * time.Second, status: 503, gaveUp: 1},
		{name: "no retries", failures: 1, retryAfter: "1", max: 0, status: 503, gaveUp: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int64
			var mu sync.Mutex
			var bodies []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				bodies = append(bodies, string(b))
				mu.Unlock()
				if calls.Add(1) <= int64(tt.failures) {
					if tt.retryAfter != "" {
						w.Header().Set("Retry-After", tt.retryAfter)
					}
					http.Error(w, "too many requests in progress; retry later", http.StatusServiceUnavailable)
					return
				}
				fmt.Fprint(w, `{"code":200}`)
			}))
			defer srv.Close()
			var waits []time.Duration
			rt := &retryTransport{next: http.DefaultTransport, max: tt.max, now: func() time.Time { return now },
				sleep: func(_ context.Context, d time.Duration) error { waits = append(waits, d); return nil }}
			ctx := context.Background()
			if tt.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.deadline)
				defer cancel()
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/submit-task", strings.NewReader(`{"task_index":7}`))
			resp, err := (&http.Client{Transport: rt}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if fmt.Sprint(waits) != fmt.Sprint(tt.waits) {
				t.Errorf("waits %v, want %v", waits, tt.waits)
			}
			if rt.retried.Load() != int64(len(tt.waits)) || rt.gaveUp.Load() != tt.gaveUp {
				t.Errorf("retried %d, gave up %d; want %d, %d", rt.retried.Load(), rt.gaveUp.Load(), len(tt.waits), tt.gaveUp)
			}
			for _, b := range bodies {
				if b != `{"task_index":7}` {
					t.Errorf("a retry sent %q, not the same body", b)
				}
			}
		})
	}
}

// TestRun503ThenOK runs the command against an API that answers every task's first attempt 503
// with Retry-After: 1, then 200: all are submitted, each retried once, and the report says so.
func TestRun503ThenOK(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	var ok atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		first := !seen[string(b)]
		seen[string(b)] = true
		mu.Unlock()
		if first {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "too many requests in progress; retry later", http.StatusServiceUnavailable)
			return
		}
		i := ok.Add(1)
		fmt.Fprintf(w, `{"code":200,"message":"ok","business_task_id":"b%d","celery_task_id":"c%d"}`, i, i)
	}))
	defer srv.Close()
	var stdout, stderr strings.Builder
	start := time.Now()
	code := run([]string{"-n", "20", "-concurrency", "20", "-submit-only", "-no-progress", "-out", ""},
		envOf("API_URL", srv.URL), &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "succeeded:    20") || !strings.Contains(stdout.String(), "503 answers retried:  20 (20.0 s waited") ||
		!strings.Contains(stdout.String(), "still 503 after 5 retries: 0") {
		t.Errorf("output:\n%s", stdout.String())
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("finished in %v: the retries did not wait the 1 s Retry-After asked", d)
	}

	// With retries off, the same API fails every submission.
	seen = map[string]bool{}
	stdout.Reset()
	if code := run([]string{"-n", "5", "-submit-only", "-no-progress", "-out", "", "-retry-503", "0"},
		envOf("API_URL", srv.URL), &stdout, &stderr); code != 1 || !strings.Contains(stdout.String(), "failed:       5") {
		t.Errorf("without retries: exit %d, output:\n%s", code, stdout.String())
	}
}

// TestSentinelMasterName: a sentinel:// URL needs a master name, taken from the example services'
// variable or the flag.
func TestSentinelMasterName(t *testing.T) {
	const url = "sentinel://127.0.0.1:1;sentinel://127.0.0.1:2/0"
	if _, err := openPools(envOf("REDIS_URL", url), url, "", ""); err == nil || !strings.Contains(err.Error(), "master name") {
		t.Fatalf("sentinel URL without a master name: err %v", err)
	}
	p, err := openPools(envOf("REDIS_URL", url), url, "mymaster", "")
	if err != nil {
		t.Fatal(err)
	}
	p.close()
	var stdout, stderr strings.Builder
	if code := run([]string{"-n", "1", "-submit-only", "-no-progress"}, envOf("REDIS_URL", url), &stdout, &stderr); code != 2 ||
		!strings.Contains(stderr.String(), "master name") {
		t.Errorf("exit %d, stderr %s", code, stderr.String())
	}
}

// TestSentinelPools: against real sentinels (one master, one replica, three sentinels), the pools
// the load tester opens for a sentinel:// result backend and broker reach the master.
func TestSentinelPools(t *testing.T) {
	s := celerytest.StartSentinels(t)
	env := envOf("REDIS_URL", s.URL(0), "BROKER_MASTER_NAME", celerytest.SentinelMaster)
	p, err := openPools(env, s.URL(1), env("BROKER_MASTER_NAME"), "")
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	for name, pool := range map[string]celerycompat.Pool{"results": p.results, "broker": p.broker} {
		c, err := pool.GetContext(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		role, err := redis.Values(c.Do("ROLE"))
		c.Close()
		if err != nil || len(role) == 0 || fmt.Sprintf("%s", role[0]) != "master" {
			t.Errorf("%s pool reached ROLE %q (%v), want the master", name, role, err)
		}
	}
}
