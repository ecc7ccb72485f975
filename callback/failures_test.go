package callback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/google/go-cmp/cmp"
)

func TestPermanentFailuresDeadLetterAtOnce(t *testing.T) {
	_, pool := startRedis(t)
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
		if code == http.StatusMovedPermanently {
			http.Redirect(w, r, "/status/200", code)
			return
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, "answer %d\n  with   spaces", code)
	}))
	t.Cleanup(srv.Close)
	ob := newTestOutbox(t, pool, "", func(c *OutboxConfig) { c.AllowedURLs = []string{srv.URL + "/status/"} })
	runDispatcher(t, ob, fastDispatch())
	for _, code := range []int{400, 404, 410, 422, 301} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			before := requests.Load()
			ev := Event{CeleryTaskID: fmt.Sprint("perm-", code), Status: StatusFailed, Error: "x", URL: fmt.Sprint(srv.URL, "/status/", code)}
			if err := ob.Enqueue(context.Background(), ev); err != nil {
				t.Fatal(err)
			}
			var dl []DeadLetter
			waitFor(t, 10*time.Second, "dead letter", func() (bool, string) {
				all, err := ob.DeadLetters(context.Background(), 0)
				dl = dl[:0]
				for _, d := range all {
					if d.EventID == ev.ID() {
						dl = append(dl, d)
					}
				}
				return len(dl) == 1, fmt.Sprint(all, err)
			})
			d := dl[0]
			want := fmt.Sprintf("answer %d with spaces", code)
			if code == 301 {
				want = d.LastError // the redirect page; only the status matters
			}
			if d.Reason != fmt.Sprintf("HTTP %d is not retryable", code) || d.LastStatus != code || d.LastError != want ||
				d.Attempts != 1 || d.TaskID != ev.CeleryTaskID || d.Status != StatusFailed || d.URL != ev.URL {
				t.Errorf("dead letter %+v", d)
			}
			if n := requests.Load() - before; n != 1 {
				t.Errorf("%d requests for a permanent failure, want 1 (no retry, redirect not followed)", n)
			}
		})
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	_, pool := startRedis(t)
	t0 := time.Unix(1_766_000_000, 0)
	tests := []struct {
		name   string
		status int
		header string
		min    time.Duration // due - t0 at least
		max    time.Duration // and at most
	}{
		{"429 seconds", 429, "7", 7 * time.Second, 7 * time.Second},
		{"503 HTTP date", 503, t0.Add(30 * time.Second).UTC().Format(http.TimeFormat), 30 * time.Second, 30 * time.Second},
		{"429 Retry-After below the backoff base", 429, "0", 2 * time.Second, 2 * time.Second},
		{"429 without Retry-After: backoff", 429, "", time.Second, 2 * time.Second},
		{"408: backoff", 408, "", time.Second, 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{t: t0}
			store, app := NewMemoryStore(), newApplied()
			h, err := NewHandler(HandlerConfig{Store: store, Secret: testSecret, OnCallback: app.hook, Clock: clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			var attempts []int
			var mu sync.Mutex
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				_, attempt := attemptOf(body)
				mu.Lock()
				attempts = append(attempts, attempt)
				mu.Unlock()
				if attempt == 1 {
					if tt.header != "" {
						w.Header().Set("Retry-After", tt.header)
					}
					w.WriteHeader(tt.status)
					return
				}
				r.Body = io.NopCloser(strings.NewReader(string(body)))
				h.ServeHTTP(w, r)
			}))
			t.Cleanup(srv.Close)
			ob := newTestOutbox(t, pool, srv.URL, func(c *OutboxConfig) { c.Prefix = tt.name + "."; c.Clock = clock.Now })
			cfg := fastDispatch()
			cfg.BackoffBase, cfg.BackoffCap = 2*time.Second, time.Minute
			runDispatcher(t, ob, cfg)
			ev := events(tt.name, 1)[0]
			enqueueAll(t, ob, []Event{ev})

			var due time.Duration
			waitFor(t, 10*time.Second, "the event back in the outbox after the first attempt", func() (bool, string) {
				c, err := pool.GetContext(context.Background())
				if err != nil {
					return false, err.Error()
				}
				defer c.Close()
				// The failure record and the new due time are written by one script.
				if ok, _ := redis.Bool(c.Do("HEXISTS", ob.Keys().Last, ev.ID())); !ok {
					return false, "no failure recorded yet"
				}
				ms, err := redis.Int64(c.Do("ZSCORE", ob.Keys().Due, ev.ID()))
				due = time.UnixMilli(ms).Sub(t0)
				return err == nil, fmt.Sprint(err)
			})
			if due < tt.min || due > tt.max {
				t.Errorf("next attempt due %v after the first, want within [%v, %v]", due, tt.min, tt.max)
			}
			clock.Advance(due)
			waitDrained(t, ob, 10*time.Second)
			checkExactlyOnce(t, store, app, []Event{ev})
			mu.Lock()
			defer mu.Unlock()
			if diff := cmp.Diff([]int{1, 2}, attempts); diff != "" {
				t.Errorf("attempts seen (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMaxAttemptsDeadLetterAndReplay(t *testing.T) {
	_, pool := startRedis(t)
	var healthy atomic.Bool
	var attempts sync.Map // attempt number → seen
	store, app := NewMemoryStore(), newApplied()
	h, err := NewHandler(HandlerConfig{Store: store, Secret: testSecret, OnCallback: app.hook})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			body, _ := io.ReadAll(r.Body)
			_, n := attemptOf(body)
			attempts.Store(n, true)
			http.Error(w, "boom", http.StatusBadGateway)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	ob := newTestOutbox(t, pool, srv.URL)
	cfg := fastDispatch()
	cfg.MaxAttempts = 3
	runDispatcher(t, ob, cfg)
	ev := events("maxattempts", 1)[0]
	enqueueAll(t, ob, []Event{ev})

	var dl []DeadLetter
	waitFor(t, 10*time.Second, "a dead letter", func() (bool, string) {
		var err error
		dl, err = ob.DeadLetters(context.Background(), 10)
		return len(dl) == 1, fmt.Sprint(dl, err)
	})
	d := dl[0]
	if d.EventID != ev.ID() || d.Reason != "max attempts (3) reached" || d.LastStatus != 502 || d.LastError != "boom" || d.Attempts != 3 ||
		d.CeleryTaskID != ev.CeleryTaskID || d.TaskID != ev.TaskID || d.TaskName != ev.TaskName || d.Status != StatusSuccess ||
		d.DeadAt.Before(d.CreatedAt) {
		t.Errorf("dead letter %+v", d)
	}
	for n := 1; n <= 3; n++ {
		if _, ok := attempts.Load(n); !ok {
			t.Errorf("attempt %d never reached the receiver", n)
		}
	}
	if st, _ := ob.Stats(context.Background()); st != (Stats{Dead: 1}) {
		t.Errorf("Stats = %+v, want one dead", st)
	}

	healthy.Store(true)
	err = ob.Replay(context.Background(), ev.ID(), "no-such-event")
	var re ReplayErrors
	if !errors.As(err, &re) || len(re) != 2 || re[0] != nil || !errors.Is(re[1], ErrNotDeadLetter) || re.Count() != 1 ||
		!errors.Is(err, ErrNotDeadLetter) {
		t.Fatalf("Replay = %#v, want [nil, ErrNotDeadLetter]", err)
	}
	waitDrained(t, ob, 10*time.Second)
	checkExactlyOnce(t, store, app, []Event{ev})
	if cbs, _ := store.ByTaskID(context.Background(), ev.TaskID); len(cbs) == 1 && cbs[0].Attempt != 1 {
		t.Errorf("replayed event delivered as attempt %d, want a fresh count (1)", cbs[0].Attempt)
	}
	if dl, _ := ob.DeadLetters(context.Background(), 0); len(dl) != 0 {
		t.Errorf("dead letters after replay: %+v", dl)
	}
	if err := ob.Replay(context.Background(), ev.ID()); !errors.Is(err, ErrNotDeadLetter) {
		t.Errorf("Replay of a delivered event = %v, want ErrNotDeadLetter", err)
	}
}

func TestMaxAgeDeadLetter(t *testing.T) {
	_, pool := startRedis(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	ob := newTestOutbox(t, pool, srv.URL)
	cfg := fastDispatch()
	cfg.MaxAge, cfg.BackoffBase, cfg.BackoffCap = time.Minute, 3*time.Minute, 3*time.Minute
	runDispatcher(t, ob, cfg)
	ev := events("maxage", 1)[0]
	enqueueAll(t, ob, []Event{ev})
	waitFor(t, 10*time.Second, "a dead letter", func() (bool, string) {
		dl, err := ob.DeadLetters(context.Background(), 0)
		return len(dl) == 1 && strings.HasPrefix(dl[0].Reason, "max age (1m0s) would be exceeded") && dl[0].LastStatus == 503,
			fmt.Sprint(dl, err)
	})
}
