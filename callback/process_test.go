//go:build unix

package callback

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/internal/celerytest"
	"github.com/gomodule/redigo/redis"
)

// helperEnv selects the role of a re-executed test binary.
const helperEnv = "CELERYBRIDGE_CALLBACK_HELPER"

// TestHelperProcess is not a test: re-executed by TestDispatcherKilledMidDelivery with
// CELERYBRIDGE_CALLBACK_HELPER=dispatcher, or by BenchmarkDelivery with =bench-dispatcher, it
// runs a dispatcher until SIGTERM (or SIGKILL).
func TestHelperProcess(t *testing.T) {
	role := os.Getenv(helperEnv)
	if role != "dispatcher" && role != "bench-dispatcher" {
		return
	}
	redisAddr, url := os.Getenv("HELPER_REDIS_ADDR"), os.Getenv("HELPER_URL")
	pool := &redis.Pool{MaxIdle: 8, DialContext: func(ctx context.Context) (redis.Conn, error) {
		return redis.DialContext(ctx, "tcp", redisAddr)
	}}
	defer pool.Close()
	ob, err := NewOutbox(pool, OutboxConfig{URL: url})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	cfg := fastDispatch()
	cfg.Timeout, cfg.Lease = time.Second, 2*time.Second
	if role == "bench-dispatcher" {
		// The defaults, as a worker process would run them, with the benchmark's concurrency.
		cfg = DispatcherConfig{Secret: testSecret, Concurrency: benchConcurrency, PollInterval: 10 * time.Millisecond}
	}
	d, err := NewDispatcher(ob, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	fmt.Println("helper: dispatcher running, pid", os.Getpid())
	if err := d.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("helper: drained")
}

// startHelper re-executes the test binary as a dispatcher process.
func startHelper(t testing.TB, redisAddr, url string) (*exec.Cmd, *celerytest.SyncBuffer) {
	return startHelperRole(t, "dispatcher", redisAddr, url)
}

func startHelperRole(t testing.TB, role, redisAddr, url string) (*exec.Cmd, *celerytest.SyncBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+role, "HELPER_REDIS_ADDR="+redisAddr, "HELPER_URL="+url)
	out := &celerytest.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper: %v", err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, out
}

// TestDispatcherKilledMidDelivery: a dispatcher process is SIGKILLed while its outbox is full and
// requests are in flight; another process finishes the job. Every callback arrives once.
func TestDispatcherKilledMidDelivery(t *testing.T) {
	r, pool := startRedis(t)
	store, app := NewMemoryStore(), newApplied()
	h, err := NewHandler(HandlerConfig{Store: store, Secret: testSecret, OnCallback: app.hook})
	if err != nil {
		t.Fatal(err)
	}
	const passFirst = 30
	var served, held atomic.Int64
	release := make(chan struct{})
	var inHandler sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inHandler.Add(1)
		defer inHandler.Done()
		body, _ := io.ReadAll(r.Body)
		if served.Add(1) > passFirst {
			select {
			case <-release:
			default:
				held.Add(1)
				<-release // the sender dies meanwhile; then the callback is processed anyway
			}
		}
		r2 := r.Clone(context.WithoutCancel(r.Context()))
		r2.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(w, r2)
	}))
	t.Cleanup(func() { inHandler.Wait(); srv.Close() })

	ob := newTestOutbox(t, pool, srv.URL)
	evs := events("killed", 200)
	enqueueAll(t, ob, evs)

	a, outA := startHelper(t, r.Addr(), srv.URL)
	waitFor(t, 30*time.Second, "the first dispatcher to have requests stuck in flight", func() (bool, string) {
		return held.Load() >= 4, fmt.Sprintf("served %d, held %d; helper output: %s", served.Load(), held.Load(), outA.String())
	})
	st, err := ob.Stats(context.Background())
	if err != nil || st.InFlight == 0 || st.Pending == 0 {
		t.Fatalf("before the kill: Stats %+v, %v; want events both in flight and pending", st, err)
	}
	if err := a.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = a.Wait()
	if ws, ok := a.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("first dispatcher ended with %v, want killed by SIGKILL", a.ProcessState)
	}
	close(release)
	t.Logf("killed the first dispatcher with %d events in flight, %d pending, %d callbacks stored", st.InFlight, st.Pending, passFirst)

	b, outB := startHelper(t, r.Addr(), srv.URL)
	st = waitDrained(t, ob, 60*time.Second)
	if st.Dead != 0 {
		t.Errorf("dead letters: %+v", st)
	}
	checkExactlyOnce(t, store, app, evs)
	if ss, _ := store.Stats(context.Background()); ss.Duplicates == 0 {
		t.Errorf("no duplicate suppressed: the requests in flight at the kill were not resent (%+v)", ss)
	}
	if err := b.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := b.Wait(); err != nil || !strings.Contains(outB.String(), "helper: drained") {
		t.Errorf("second dispatcher after SIGTERM: %v\n%s", err, outB.String())
	}
}
