package callback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

func TestDispatcherLifecycle(t *testing.T) {
	_, pool := startRedis(t)
	release := make(chan struct{})
	arrived := make(chan string, 10)
	var hold atomic.Bool
	hold.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body) // the server notices a client going away only after the body
		arrived <- r.Header.Get(HeaderIdempotencyKey)
		if hold.Load() {
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	ctx := context.Background()

	t.Run("shutdown before run", func(t *testing.T) {
		d, err := NewDispatcher(newTestOutbox(t, pool, srv.URL), fastDispatch())
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown = %v", err)
		}
		if err := d.Run(ctx); !errors.Is(err, ErrDispatcherClosed) {
			t.Errorf("Run after Shutdown = %v", err)
		}
		if err := d.Shutdown(ctx); !errors.Is(err, ErrDispatcherClosed) {
			t.Errorf("second Shutdown = %v", err)
		}
	})

	t.Run("cancel drains the request in flight", func(t *testing.T) {
		ob := newTestOutbox(t, pool, srv.URL, func(c *OutboxConfig) { c.Prefix = "drain." })
		d, err := NewDispatcher(ob, fastDispatch())
		if err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- d.Run(runCtx) }()
		ev := events("drain", 1)[0]
		enqueueAll(t, ob, []Event{ev})
		<-arrived
		cancel()
		select {
		case err := <-errc:
			t.Fatalf("Run returned %v with a request in flight", err)
		case <-time.After(50 * time.Millisecond):
		}
		release <- struct{}{}
		if err := <-errc; err != nil {
			t.Errorf("Run = %v, want nil after draining", err)
		}
		if st, _ := ob.Stats(ctx); st != (Stats{}) {
			t.Errorf("Stats after drain = %+v, want the event delivered", st)
		}
		if err := d.Run(ctx); !errors.Is(err, ErrDispatcherClosed) {
			t.Errorf("second Run = %v", err)
		}
		if err := d.Shutdown(ctx); !errors.Is(err, ErrDispatcherClosed) {
			t.Errorf("Shutdown after Run returned = %v", err)
		}
	})

	t.Run("shutdown deadline aborts and releases the lease", func(t *testing.T) {
		ob := newTestOutbox(t, pool, srv.URL, func(c *OutboxConfig) { c.Prefix = "abort." })
		d, err := NewDispatcher(ob, fastDispatch())
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() { errc <- d.Run(ctx) }()
		ev := events("abort", 1)[0]
		enqueueAll(t, ob, []Event{ev})
		<-arrived
		sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if err := d.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
		}
		if err := <-errc; err != nil {
			t.Errorf("Run = %v", err)
		}
		st, _ := ob.Stats(ctx)
		c, _ := pool.GetContext(ctx)
		defer c.Close()
		n, _ := redis.Int(c.Do("HGET", ob.Keys().Attempts, ev.ID()))
		if st != (Stats{Pending: 1, Ready: 1}) || n != 0 {
			t.Errorf("after abort: Stats %+v, attempts %d; want the event due again with the attempt not counted", st, n)
		}
	})
}

func TestNewDispatcherValidates(t *testing.T) {
	_, pool := startRedis(t)
	ob := newTestOutbox(t, pool, "http://127.0.0.1:1/")
	if _, err := NewDispatcher(nil, DispatcherConfig{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("nil outbox: %v", err)
	}
	if _, err := NewDispatcher(ob, DispatcherConfig{}); err != nil {
		t.Errorf("zero config: %v", err)
	}
	for _, cfg := range []DispatcherConfig{
		{Timeout: time.Minute, Lease: time.Minute},
		{Concurrency: -1},
		{BackoffBase: time.Minute, BackoffCap: time.Second},
		{BackoffFactor: 0.5},
		{MaxAttempts: -1},
		{Timeout: -time.Second},
		{Linger: -time.Millisecond},
	} {
		if _, err := NewDispatcher(ob, cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("NewDispatcher(%+v) = %v, want ErrInvalidConfig", cfg, err)
		}
	}
}

func TestDispatcherSurvivesRedisOutage(t *testing.T) {
	r, pool := startRedis(t)
	store, app := NewMemoryStore(), newApplied()
	srv := startReceiver(t, HandlerConfig{Store: store, Secret: testSecret, OnCallback: app.hook})
	ob := newTestOutbox(t, pool, srv.URL)
	runDispatcher(t, ob, fastDispatch())
	before := events("outage-before", 5)
	enqueueAll(t, ob, before)
	waitDrained(t, ob, 10*time.Second)
	r.Stop()
	if err := ob.Enqueue(context.Background(), events("outage-during", 1)[0]); !errors.Is(err, ErrRedis) {
		t.Fatalf("Enqueue with Redis down = %v, want ErrRedis", err)
	}
	r.Start()
	after := events("outage-after", 5)
	enqueueAll(t, ob, after)
	waitDrained(t, ob, 20*time.Second)
	checkExactlyOnce(t, store, app, append(before, after...))
}

// TestDispatcherLeavesNoGoroutines: after Shutdown, nothing the dispatcher started is left
// running (claim loop, settler, deliveries, idle HTTP connections).
func TestDispatcherLeavesNoGoroutines(t *testing.T) {
	_, pool := startRedis(t)
	h, err := NewHandler(HandlerConfig{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	ob := newTestOutbox(t, pool, srv.URL)
	enqueueAll(t, ob, events("leak", 20))
	base := runtime.NumGoroutine()
	d, err := NewDispatcher(ob, fastDispatch())
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- d.Run(context.Background()) }()
	waitDrained(t, ob, 10*time.Second)
	if err := d.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	srv.Close()
	waitFor(t, 10*time.Second, "goroutines back to the baseline", func() (bool, string) {
		n := runtime.NumGoroutine()
		if n <= base {
			return true, ""
		}
		buf := make([]byte, 1<<16)
		return false, fmt.Sprintf("%d goroutines, baseline %d:\n%s", n, base, buf[:runtime.Stack(buf, true)])
	})
}
