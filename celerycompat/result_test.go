package celerycompat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// waitFor polls cond until it holds (a readiness check, not an assertion) or fails the test.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// numSub is PUBSUB NUMSUB for one channel.
func numSub(t testing.TB, r *celerytest.Redis, channel string) int {
	t.Helper()
	v, err := redis.Values(r.Do(0, "PUBSUB", "NUMSUB", channel), nil)
	if err != nil || len(v) != 2 {
		t.Fatalf("PUBSUB NUMSUB: %v %v", v, err)
	}
	n, _ := redis.Int(v[1], nil)
	return n
}

// getCalls is the server's count of GET commands (INFO commandstats).
func getCalls(t testing.TB, r *celerytest.Redis) int {
	t.Helper()
	info, _ := redis.String(r.Do(0, "INFO", "commandstats"), nil)
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_get:calls="); ok {
			n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			return n
		}
	}
	return 0
}

type getResult struct {
	v   any
	err error
	at  time.Time
}

func asyncGet(ctx context.Context, ar *AsyncResult) <-chan getResult {
	ch := make(chan getResult, 1)
	go func() {
		v, err := ar.Get(ctx)
		ch <- getResult{v, err, time.Now()}
	}()
	return ch
}

func recv(t testing.TB, ch <-chan getResult) getResult {
	t.Helper()
	select {
	case g := <-ch:
		return g
	case <-time.After(10 * time.Second):
		t.Fatal("Get did not return")
		return getResult{}
	}
}

// TestResultGetWakesOnPublish: a Get that is already waiting returns promptly after a store,
// woken by the PUBLISH: the server saw exactly one GET (the read after subscribing).
func TestResultGetWakesOnPublish(t *testing.T) {
	b, r := newTestBackend(t, BackendConfig{})
	ctx := context.Background()
	ar := b.AsyncResult("w1")
	ch := asyncGet(ctx, ar)
	waitFor(t, "subscription", func() bool { return numSub(t, r, "celery-task-meta-w1") == 1 })
	waitFor(t, "initial GET", func() bool { return getCalls(t, r) == 1 })
	if _, err := b.MarkStarted(ctx, "w1", 1, "h"); err != nil { // not ready: Get keeps waiting
		t.Fatal(err)
	}
	stored := time.Now()
	if _, err := b.MarkSuccess(ctx, "w1", map[string]any{"sum": 5}); err != nil {
		t.Fatal(err)
	}
	g := recv(t, ch)
	if g.err != nil {
		t.Fatal(g.err)
	}
	if m, ok := g.v.(map[string]any); !ok || m["sum"] != json.Number("5") {
		t.Errorf("Get = %#v", g.v)
	}
	lat := g.at.Sub(stored)
	t.Logf("wake-up latency after store: %v", lat)
	if lat > time.Second {
		t.Errorf("Get returned %v after the store", lat)
	}
	// The two stores each run one GET inside their Lua script; Get itself read the key once.
	if n := getCalls(t, r); n != 1+2 {
		t.Errorf("server saw %d GETs, want 3 = Get's one read + one per store (woken by PUBLISH, no polling)", n)
	}
	waitFor(t, "unsubscribe", func() bool { return numSub(t, r, "celery-task-meta-w1") == 0 })
}

func TestResultGetStates(t *testing.T) {
	tests := []struct {
		name    string
		store   func(context.Context, *Backend, string) error
		want    any
		wantErr *TaskError
	}{
		{"success", func(ctx context.Context, b *Backend, id string) error {
			_, err := b.MarkSuccess(ctx, id, []any{1, "two"})
			return err
		}, []any{json.Number("1"), "two"}, nil},
		{"success null", func(ctx context.Context, b *Backend, id string) error {
			_, err := b.MarkSuccess(ctx, id, nil)
			return err
		}, nil, nil},
		{"failure", func(ctx context.Context, b *Backend, id string) error {
			_, err := b.MarkFailure(ctx, id, &TaskError{ExcType: "ValueError", ExcModule: "builtins", ExcMessage: []any{"bad", 42}}, "tb")
			return err
		}, nil, &TaskError{ExcType: "ValueError", ExcModule: "builtins", ExcMessage: []any{"bad", json.Number("42")}, Traceback: "tb", State: "FAILURE"}},
		{"revoked", func(ctx context.Context, b *Backend, id string) error {
			_, err := b.MarkRevoked(ctx, id, RevokedReasonTerminated)
			return err
		}, nil, &TaskError{ExcType: "TaskRevokedError", ExcModule: "celery.exceptions", ExcMessage: []any{"terminated"}, State: "REVOKED"}},
	}
	b, _ := newTestBackend(t, BackendConfig{})
	for _, tt := range tests {
		for _, order := range []string{"stored before Get", "stored while waiting"} {
			t.Run(tt.name+"/"+order, func(t *testing.T) {
				ctx := context.Background()
				id := tt.name + order
				var ch <-chan getResult
				if order == "stored while waiting" {
					ch = asyncGet(ctx, b.AsyncResult(id))
					waitFor(t, "subscription", func() bool { return b.consumer.subscriptions() == 1 })
				}
				if err := tt.store(ctx, b, id); err != nil {
					t.Fatal(err)
				}
				if ch == nil {
					ch = asyncGet(ctx, b.AsyncResult(id))
				}
				g := recv(t, ch)
				if tt.wantErr != nil {
					var te *TaskError
					if !errors.As(g.err, &te) {
						t.Fatalf("err = %v, want *TaskError", g.err)
					}
					if fmt.Sprintf("%#v", te) != fmt.Sprintf("%#v", tt.wantErr) {
						t.Errorf("err = %#v\nwant %#v", te, tt.wantErr)
					}
					return
				}
				if g.err != nil || fmt.Sprint(g.v) != fmt.Sprint(tt.want) {
					t.Errorf("Get = %#v, %v; want %#v", g.v, g.err, tt.want)
				}
			})
		}
	}
}

func TestResultStateReadyForget(t *testing.T) {
	b, _ := newTestBackend(t, BackendConfig{})
	ctx := context.Background()
	ar := b.AsyncResult("s1")
	check := func(want State) {
		t.Helper()
		s, err := ar.State(ctx)
		if err != nil || s != want {
			t.Fatalf("State = %s, %v; want %s", s, err, want)
		}
		ready, err := ar.Ready(ctx)
		if err != nil || ready != want.Ready() {
			t.Fatalf("Ready = %v, %v", ready, err)
		}
	}
	check(StatePending)
	b.MarkStarted(ctx, "s1", 1, "h")
	check(StateStarted)
	b.MarkSuccess(ctx, "s1", 1)
	check(StateSuccess)
	if m, err := ar.Meta(ctx); err != nil || m.Result != json.Number("1") {
		t.Fatalf("Meta = %+v, %v", m, err)
	}
	if err := ar.Forget(ctx); err != nil {
		t.Fatal(err)
	}
	check(StatePending)
}

// TestResultGetConcurrentSharesOneConnection: 200 concurrent Gets use one pub/sub connection
// with 200 channels, and all return their own values.
func TestResultGetConcurrentSharesOneConnection(t *testing.T) {
	b, r := newTestBackend(t, BackendConfig{})
	ctx := context.Background()
	const n = 200
	chans := make([]<-chan getResult, n)
	for i := range n {
		chans[i] = asyncGet(ctx, b.AsyncResult(fmt.Sprintf("c%03d", i)))
	}
	waitFor(t, "200 subscriptions", func() bool { return b.consumer.subscriptions() == n })

	clients, _ := redis.String(r.Do(0, "CLIENT", "LIST"), nil)
	var subscribers []string
	for _, line := range strings.Split(strings.TrimSpace(clients), "\n") {
		if !strings.Contains(line, " sub=0 ") {
			subscribers = append(subscribers, line)
		}
	}
	if len(subscribers) != 1 || !strings.Contains(subscribers[0], " sub=200 ") {
		t.Fatalf("want one client subscribed to 200 channels, got:\n%s", strings.Join(subscribers, "\n"))
	}

	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.MarkSuccess(ctx, fmt.Sprintf("c%03d", i), i); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for i, ch := range chans {
		g := recv(t, ch)
		if g.err != nil || g.v != json.Number(strconv.Itoa(i)) {
			t.Errorf("Get c%03d = %v, %v", i, g.v, g.err)
		}
	}
	waitFor(t, "all unsubscribed", func() bool {
		v, _ := redis.Values(r.Do(0, "PUBSUB", "CHANNELS", "celery-task-meta-*"), nil)
		return len(v) == 0
	})
}

// TestResultGetSurvivesRedisRestart: a waiting Get still returns when Redis restarts under it
// and the result is stored afterwards, whether the store lands before or after the consumer
// has re-subscribed.
func TestResultGetSurvivesRedisRestart(t *testing.T) {
	for _, when := range []string{"after resubscribe", "right after restart"} {
		t.Run(when, func(t *testing.T) {
			b, r := newTestBackend(t, BackendConfig{})
			ctx := context.Background()
			ch := asyncGet(ctx, b.AsyncResult("r1"))
			waitFor(t, "subscription", func() bool { return numSub(t, r, "celery-task-meta-r1") == 1 })
			r.Stop()
			r.Start()
			if when == "after resubscribe" {
				waitFor(t, "re-subscription", func() bool { return numSub(t, r, "celery-task-meta-r1") == 1 })
			}
			var stored bool
			var err error
			for range 100 { // the pool may hand out a connection to the dead server first
				if stored, err = b.MarkSuccess(ctx, "r1", "after restart"); err == nil {
					break
				}
			}
			if err != nil || !stored {
				t.Fatalf("store: %v %v", stored, err)
			}
			g := recv(t, ch)
			if g.err != nil || g.v != "after restart" {
				t.Fatalf("Get = %v, %v", g.v, g.err)
			}
		})
	}
}

func TestResultGetContext(t *testing.T) {
	b, r := newTestBackend(t, BackendConfig{})
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		ch := asyncGet(ctx, b.AsyncResult("x1"))
		waitFor(t, "subscription", func() bool { return numSub(t, r, "celery-task-meta-x1") == 1 })
		cancel()
		if g := recv(t, ch); !errors.Is(g.err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", g.err)
		}
		waitFor(t, "unsubscribe", func() bool { return numSub(t, r, "celery-task-meta-x1") == 0 })
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := b.AsyncResult("x2").Get(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want context.DeadlineExceeded", err)
		}
	})
	t.Run("already cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := b.AsyncResult("x3").Get(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestResultGetAfterClose: Close interrupts waiting Gets, stops the consumer goroutine, and later
// Gets fail; reads still work.
func TestResultGetAfterClose(t *testing.T) {
	b, r := newTestBackend(t, BackendConfig{})
	ctx := context.Background()
	ch := asyncGet(ctx, b.AsyncResult("z1"))
	waitFor(t, "subscription", func() bool { return numSub(t, r, "celery-task-meta-z1") == 1 })
	b.Close()
	if g := recv(t, ch); !errors.Is(g.err, ErrBackend) {
		t.Fatalf("waiting Get err = %v, want ErrBackend", g.err)
	}
	select {
	case <-b.consumer.done:
	default:
		t.Fatal("consumer goroutine still running after Close")
	}
	if _, err := b.AsyncResult("z2").Get(ctx); !errors.Is(err, ErrBackend) {
		t.Fatalf("Get after Close err = %v", err)
	}
	waitFor(t, "pub/sub connection closed", func() bool { return numSub(t, r, "celery-task-meta-z1") == 0 })
	if _, err := b.MarkSuccess(ctx, "z2", 1); err != nil {
		t.Fatal(err)
	}
	if s, err := b.AsyncResult("z2").State(ctx); err != nil || s != StateSuccess {
		t.Fatalf("State after Close = %s, %v", s, err)
	}
	b.Close() // idempotent
}
