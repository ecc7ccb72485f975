package callback

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// testSecret signs requests in tests.
var testSecret = []byte("test secret: not for production")

// startRedis starts a redis-server for the test and returns a pool on database 0.
func startRedis(t testing.TB) (*celerytest.Redis, *redis.Pool) {
	t.Helper()
	r := celerytest.StartRedis(t)
	return r, r.Pool(0)
}

// newTestOutbox returns an outbox sending to url by default.
func newTestOutbox(t testing.TB, pool Pool, url string, mod ...func(*OutboxConfig)) *Outbox {
	t.Helper()
	cfg := OutboxConfig{URL: url}
	for _, m := range mod {
		m(&cfg)
	}
	ob, err := NewOutbox(pool, cfg)
	if err != nil {
		t.Fatalf("NewOutbox: %v", err)
	}
	return ob
}

// fastDispatch is a DispatcherConfig with short delays for tests.
func fastDispatch() DispatcherConfig {
	return DispatcherConfig{
		Secret:       testSecret,
		Timeout:      2 * time.Second,
		Lease:        5 * time.Second,
		Concurrency:  8,
		PollInterval: 10 * time.Millisecond,
		BackoffBase:  5 * time.Millisecond,
		BackoffCap:   50 * time.Millisecond,
		MaxAttempts:  1000,
	}
}

// runDispatcher starts a dispatcher and shuts it down (checking Run's result) when the test ends.
func runDispatcher(t testing.TB, ob *Outbox, cfg DispatcherConfig) *Dispatcher {
	t.Helper()
	d, err := NewDispatcher(ob, cfg)
	if err != nil {
		t.Fatalf("NewDispatcher: %v", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- d.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.Shutdown(ctx); err != nil && !errors.Is(err, ErrDispatcherClosed) {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return d
}

// waitFor polls cond until it holds or the deadline passes; describe says what was last seen.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last seen: %s", timeout, what, seen)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitDrained waits until the outbox has nothing pending or in flight.
func waitDrained(t testing.TB, ob *Outbox, timeout time.Duration) Stats {
	t.Helper()
	var st Stats
	waitFor(t, timeout, "outbox drained", func() (bool, string) {
		var err error
		st, err = ob.Stats(context.Background())
		if err != nil {
			return false, err.Error()
		}
		return st.Pending == 0 && st.InFlight == 0, fmt.Sprintf("%+v", st)
	})
	return st
}

// events returns n success events of tasks "<prefix>-<i>" with business ids "biz-<prefix>-<i>".
func events(prefix string, n int) []Event {
	evs := make([]Event, n)
	for i := range evs {
		evs[i] = Event{
			CeleryTaskID: fmt.Sprintf("%s-%d", prefix, i),
			TaskID:       fmt.Sprintf("biz-%s-%d", prefix, i),
			TaskName:     "tasks.process_task",
			Status:       StatusSuccess,
			Result:       map[string]any{"status": "success", "index": i},
		}
	}
	return evs
}

func enqueueAll(t testing.TB, ob *Outbox, evs []Event) {
	t.Helper()
	for _, ev := range evs {
		if err := ob.Enqueue(context.Background(), ev); err != nil {
			t.Fatalf("Enqueue %s: %v", ev.CeleryTaskID, err)
		}
	}
}

// applied counts OnCallback calls per event id.
type applied struct {
	mu sync.Mutex
	n  map[string]int
}

func newApplied() *applied { return &applied{n: map[string]int{}} }

func (a *applied) hook(ctx context.Context, cb Callback) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n[cb.EventID]++
	return nil
}

func (a *applied) counts() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]int, len(a.n))
	for k, v := range a.n {
		out[k] = v
	}
	return out
}

// checkExactlyOnce checks that every event is in the store once and was applied once.
func checkExactlyOnce(t testing.TB, store Store, app *applied, evs []Event) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Stats(ctx)
	if err != nil {
		t.Fatalf("store Stats: %v", err)
	}
	if st.Unique != int64(len(evs)) {
		t.Errorf("store has %d unique callbacks, want %d (stats %+v)", st.Unique, len(evs), st)
	}
	counts := app.counts()
	for _, ev := range evs {
		got, err := store.ByTaskID(ctx, ev.TaskID)
		if err != nil {
			t.Fatalf("ByTaskID(%s): %v", ev.TaskID, err)
		}
		if len(got) != 1 || got[0].EventID != ev.ID() {
			t.Errorf("task %s: store has %d callbacks %v, want exactly event %s", ev.TaskID, len(got), got, ev.ID())
		}
		if n := counts[ev.ID()]; n != 1 {
			t.Errorf("task %s: OnCallback called %d times, want 1", ev.TaskID, n)
		}
	}
}

// startReceiver serves a handler on a loopback port for the test.
func startReceiver(t testing.TB, cfg HandlerConfig) *httptest.Server {
	t.Helper()
	h, err := NewHandler(cfg)
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// freeAddr returns a loopback address nothing listens on (yet).
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// listenOn listens on addr, retrying briefly while the port is still being released.
func listenOn(t testing.TB, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	waitFor(t, 10*time.Second, "listen on "+addr, func() (bool, string) {
		var err error
		l, err = net.Listen("tcp", addr)
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	return l
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// attemptOf reads "attempt" and "event_id" from a callback body.
func attemptOf(body []byte) (eventID string, attempt int) {
	var p struct {
		EventID string `json:"event_id"`
		Attempt int    `json:"attempt"`
	}
	_ = json.Unmarshal(body, &p)
	return p.EventID, p.Attempt
}
