package callback

import (
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// TestDeliverySigned checks the request each sender makes: the built-in one and one through a
// net/http Client (DispatcherConfig.Client).
func TestDeliverySigned(t *testing.T) {
	_, pool := startRedis(t)
	for _, name := range []string{"built-in", "net/http"} {
		t.Run(name, func(t *testing.T) {
			cfg := fastDispatch()
			if name == "net/http" {
				cfg.Client = &http.Client{}
			}
			testDeliverySigned(t, pool, cfg, name)
		})
	}
}

func testDeliverySigned(t *testing.T, pool *redis.Pool, cfg DispatcherConfig, prefix string) {
	store, app := NewMemoryStore(), newApplied()
	h, err := NewHandler(HandlerConfig{Store: store, Secret: testSecret, OnCallback: app.hook})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []*http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Clone(context.Background()))
		mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	ob := newTestOutbox(t, pool, srv.URL+"/receive-task-result", func(c *OutboxConfig) { c.Prefix = prefix + "." })
	evs := events("signed-"+prefix, 3)
	enqueueAll(t, ob, evs)
	runDispatcher(t, ob, cfg)
	waitDrained(t, ob, 10*time.Second)
	checkExactlyOnce(t, store, app, evs)

	mu.Lock()
	defer mu.Unlock()
	if len(seen) != len(evs) {
		t.Fatalf("receiver saw %d requests, want %d", len(seen), len(evs))
	}
	ids := map[string]bool{}
	for _, ev := range evs {
		ids[ev.ID()] = true
	}
	for _, r := range seen {
		if r.Method != http.MethodPost || r.URL.Path != "/receive-task-result" || r.Header.Get("Content-Type") != "application/json" ||
			!ids[r.Header.Get(HeaderIdempotencyKey)] || !strings.HasPrefix(r.Header.Get(HeaderSignature), "v1=") ||
			r.Header.Get(HeaderTimestamp) == "" || r.Header.Get("User-Agent") != DefaultUserAgent {
			t.Errorf("request %s %s with headers %v", r.Method, r.URL, r.Header)
		}
	}
	cbs, _ := store.ByTaskID(context.Background(), evs[0].TaskID)
	if len(cbs) == 1 && (cbs[0].Attempt != 1 || cbs[0].CeleryTaskID != evs[0].CeleryTaskID || cbs[0].TaskName != "tasks.process_task") {
		t.Errorf("stored %+v", cbs[0])
	}
}

func TestReceiverDownThenUp(t *testing.T) {
	r, pool := startRedis(t)
	addr := freeAddr(t)
	ob := newTestOutbox(t, pool, "http://"+addr+"/receive-task-result")
	evs := events("down", 50)
	enqueueAll(t, ob, evs)
	runDispatcher(t, ob, fastDispatch())

	waitFor(t, 20*time.Second, "every event to fail at least once", func() (bool, string) {
		n, _ := redis.Int(r.Do(0, "HLEN", ob.Keys().Last), nil)
		return n == len(evs), fmt.Sprintf("%d failed", n)
	})
	if st, _ := ob.Stats(context.Background()); st.Dead != 0 {
		t.Fatalf("events dead-lettered while the receiver was down: %+v", st)
	}

	app := newApplied()
	serve := func(store Store, limit int64) (stop func()) {
		h, err := NewHandler(HandlerConfig{Store: store, Secret: testSecret, OnCallback: app.hook})
		if err != nil {
			t.Fatal(err)
		}
		var served atomic.Int64
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if limit > 0 && served.Add(1) > limit {
				resetConn(w) // the receiver "crashed"
				return
			}
			h.ServeHTTP(w, r)
		})}
		ln := listenOn(t, addr)
		go func() { _ = srv.Serve(ln) }()
		return func() { _ = srv.Close() }
	}

	// The store outlives the receiver, as a database does (the SQLite store's own tests prove
	// that it keeps what it stored across a restart): the restarted receiver must dedupe
	// against what the first one stored.
	store := NewMemoryStore()
	stop := serve(store, 20)
	waitFor(t, 20*time.Second, "20 callbacks stored", func() (bool, string) {
		st, _ := store.Stats(context.Background())
		return st.Unique >= 20, fmt.Sprintf("%+v", st)
	})
	stop()

	stop = serve(store, 0)
	defer stop()
	st := waitDrained(t, ob, 30*time.Second)
	if st.Dead != 0 {
		t.Errorf("dead letters: %+v", st)
	}
	checkExactlyOnce(t, store, app, evs)
}

func resetConn(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err) // test server: HTTP/1.1 always hijacks
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

func TestIntermittentFailures(t *testing.T) {
	_, pool := startRedis(t)
	store, app := NewMemoryStore(), newApplied()
	h, err := NewHandler(HandlerConfig{Store: store, Secret: testSecret, OnCallback: app.hook})
	if err != nil {
		t.Fatal(err)
	}
	const timeout = 300 * time.Millisecond
	modes := []string{"ok", "500", "slow", "reset before", "reset after"}
	var mu sync.Mutex
	used := map[string]int{}
	var slow sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		id, attempt := attemptOf(body)
		hf := fnv.New32a()
		hf.Write([]byte(id))
		mode := "ok"
		if attempt <= 3 {
			mode = modes[(int(hf.Sum32())+attempt)%len(modes)]
		}
		mu.Lock()
		used[mode]++
		mu.Unlock()
		replay := func(w http.ResponseWriter) {
			r2 := r.Clone(context.WithoutCancel(r.Context()))
			r2.Body = io.NopCloser(strings.NewReader(string(body)))
			h.ServeHTTP(w, r2)
		}
		switch mode {
		case "ok":
			replay(w)
		case "500":
			http.Error(w, "internal error", http.StatusInternalServerError)
		case "slow":
			slow.Add(1)
			defer slow.Done()
			time.Sleep(timeout + 200*time.Millisecond)
			replay(w)
		case "reset before":
			resetConn(w)
		case "reset after":
			replay(httptest.NewRecorder())
			resetConn(w)
		}
	}))
	t.Cleanup(func() { slow.Wait(); srv.Close() })

	ob := newTestOutbox(t, pool, srv.URL)
	evs := events("flaky", 60)
	enqueueAll(t, ob, evs)
	cfg := fastDispatch()
	cfg.Timeout, cfg.Lease = timeout, 3*time.Second
	runDispatcher(t, ob, cfg)
	if st := waitDrained(t, ob, 60*time.Second); st.Dead != 0 {
		t.Errorf("dead letters: %+v", st)
	}
	slow.Wait()
	checkExactlyOnce(t, store, app, evs)
	mu.Lock()
	defer mu.Unlock()
	for _, m := range modes {
		if used[m] == 0 {
			t.Errorf("failure mode %q never exercised: %v", m, used)
		}
	}
	if st, _ := store.Stats(context.Background()); st.Duplicates == 0 {
		t.Errorf("no duplicate was suppressed, so dedupe was not exercised: %+v", st)
	}
}

func TestTwoDispatchersNeverSendTheSameEventConcurrently(t *testing.T) {
	_, pool := startRedis(t)
	store, app := NewMemoryStore(), newApplied()
	h, err := NewHandler(HandlerConfig{Store: store, Secret: testSecret, OnCallback: app.hook})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	active, requests := map[string]int{}, map[string]int{}
	overlap := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(HeaderIdempotencyKey)
		mu.Lock()
		active[id]++
		requests[id]++
		if active[id] > 1 {
			overlap++
		}
		mu.Unlock()
		time.Sleep(2 * time.Millisecond) // widen the window a concurrent send would hit
		h.ServeHTTP(w, r)
		mu.Lock()
		active[id]--
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	ob1 := newTestOutbox(t, pool, srv.URL)
	ob2 := newTestOutbox(t, pool, srv.URL) // another process, in effect: same keys, own wake-ups
	evs := events("two", 200)
	enqueueAll(t, ob1, evs)
	runDispatcher(t, ob1, fastDispatch())
	runDispatcher(t, ob2, fastDispatch())
	waitDrained(t, ob1, 30*time.Second)
	checkExactlyOnce(t, store, app, evs)
	mu.Lock()
	defer mu.Unlock()
	for id, n := range requests {
		if n != 1 {
			t.Errorf("event %s sent %d times", id, n)
		}
	}
	if overlap != 0 {
		t.Errorf("%d concurrent sends of one event", overlap)
	}
}

// TestDispatcherLinger: woken by Enqueue, a dispatcher with Linger waits before it claims, so
// events enqueued one by one go out together.
func TestDispatcherLinger(t *testing.T) {
	_, pool := startRedis(t)
	var mu sync.Mutex
	var arrived []time.Time
	h, err := NewHandler(HandlerConfig{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrived = append(arrived, time.Now())
		mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	ob := newTestOutbox(t, pool, srv.URL)
	cfg := fastDispatch()
	cfg.Linger, cfg.PollInterval = 300*time.Millisecond, time.Minute
	runDispatcher(t, ob, cfg)
	time.Sleep(50 * time.Millisecond) // let it go idle, waiting for a nudge
	start := time.Now()
	for _, ev := range events("linger", 5) { // one Enqueue (and one nudge) each
		enqueueAll(t, ob, []Event{ev})
	}
	waitDrained(t, ob, 10*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if len(arrived) != 5 {
		t.Fatalf("%d requests, want 5", len(arrived))
	}
	first, last := arrived[0], arrived[len(arrived)-1] // appended in arrival order
	if d := first.Sub(start); d < cfg.Linger {
		t.Errorf("first request %v after the first Enqueue, want at least Linger (%v)", d, cfg.Linger)
	}
	if d := last.Sub(first); d > 150*time.Millisecond {
		t.Errorf("requests spread over %v; want them sent together", d)
	}
}
