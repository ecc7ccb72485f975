package callback

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/google/go-cmp/cmp"
)

func TestEnqueueIdempotent(t *testing.T) {
	r, pool := startRedis(t)
	clock := &fakeClock{t: time.UnixMilli(1_766_000_000_000)}
	ob := newTestOutbox(t, pool, "http://127.0.0.1:1/cb", func(c *OutboxConfig) { c.Clock = clock.Now })
	ctx := context.Background()
	ev := Event{CeleryTaskID: "c-1", TaskID: "biz-1", Status: StatusSuccess, Result: map[string]int{"n": 1}}
	if err := ob.Enqueue(ctx, ev); err != nil {
		t.Fatal(err)
	}
	first := r.Do(0, "HGET", ob.Keys().Events, ev.ID())
	// The task runs again after a crash: same id, later time, other result. Stored once, unchanged.
	clock.Advance(time.Minute)
	ev2 := ev
	ev2.Result = map[string]int{"n": 2}
	for range 3 {
		if err := ob.Enqueue(ctx, ev2); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.Do(0, "HGET", ob.Keys().Events, ev.ID()); string(got.([]byte)) != string(first.([]byte)) {
		t.Errorf("record changed by a duplicate Enqueue:\n%s\n%s", first, got)
	}
	st, err := ob.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Stats{Pending: 1, Ready: 1}, st); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
	// The other outcome of the same task is a different event.
	if err := ob.Enqueue(ctx, Event{CeleryTaskID: "c-1", Status: StatusFailed, Error: "boom"}); err != nil {
		t.Fatal(err)
	}
	if st, _ := ob.Stats(ctx); st.Pending != 2 {
		t.Errorf("Pending = %d after enqueueing the failure too, want 2", st.Pending)
	}

	rec, err := decodeRecord(first.([]byte))
	if err != nil {
		t.Fatal(err)
	}
	if rec.URL != "http://127.0.0.1:1/cb" || rec.Created != 1_766_000_000_000 || !json.Valid(rec.Payload) {
		t.Errorf("record %q", first)
	}
	if due, _ := redis.Int64(r.Do(0, "ZSCORE", ob.Keys().Due, ev.ID()), nil); due != 1_766_000_000_000 {
		t.Errorf("due = %d, want the enqueue time", due)
	}
}

func TestEnqueueAfterDeliveryIsRemembered(t *testing.T) {
	_, pool := startRedis(t)
	for _, tt := range []struct {
		name      string
		retention time.Duration
		wantAgain int64
	}{{"remembered", 0, 0}, {"retention disabled", -1, 1}} {
		t.Run(tt.name, func(t *testing.T) {
			ob := newTestOutbox(t, pool, "http://127.0.0.1:1/cb", func(c *OutboxConfig) {
				c.Prefix = "t." + tt.name + "."
				c.DeliveredRetention = tt.retention
			})
			ctx := context.Background()
			ev := Event{CeleryTaskID: "c-1", Status: StatusSuccess}
			if err := ob.Enqueue(ctx, ev); err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			items, _, _, err := ob.claim(ctx, now, now.Add(time.Minute), 10)
			if err != nil || len(items) != 1 {
				t.Fatalf("claim = %v, %v", items, err)
			}
			if _, err := ob.settle(ctx, now, []outcome{{action: actionOK, id: items[0].id, token: items[0].token}}); err != nil {
				t.Fatal(err)
			}
			if err := ob.Enqueue(ctx, ev); err != nil {
				t.Fatal(err)
			}
			if st, _ := ob.Stats(ctx); st.Pending != tt.wantAgain {
				t.Errorf("Pending after re-enqueueing a delivered event = %d, want %d", st.Pending, tt.wantAgain)
			}
		})
	}
}

func TestEnqueueURLPolicy(t *testing.T) {
	_, pool := startRedis(t)
	ob := newTestOutbox(t, pool, "http://127.0.0.1:8001/receive-task-result", func(c *OutboxConfig) {
		c.AllowedURLs = []string{"https://hooks.example.com/celery/"}
	})
	noDefault := newTestOutbox(t, pool, "", func(c *OutboxConfig) { c.Prefix = "nodefault." })
	tests := []struct {
		name string
		ob   *Outbox
		url  string
		want error
	}{
		{"default URL", ob, "", nil},
		{"default URL named explicitly", ob, "http://127.0.0.1:8001/receive-task-result", nil},
		{"allow-listed prefix", ob, "https://hooks.example.com/celery/tenant-7", nil},
		{"metadata service", ob, "http://169.254.169.254/latest/meta-data/", ErrURLNotAllowed},
		{"look-alike host", ob, "https://hooks.example.com.evil.net/celery/", ErrURLNotAllowed},
		{"path escape", ob, "https://hooks.example.com/celery/../admin", ErrURLNotAllowed},
		{"no URL anywhere", noDefault, "", ErrInvalidEvent},
		{"nothing allowed without config", noDefault, "https://hooks.example.com/celery/", ErrURLNotAllowed},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := Event{CeleryTaskID: "c-" + string(rune('a'+i)), Status: StatusSuccess, URL: tt.url}
			err := tt.ob.Enqueue(context.Background(), ev)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Enqueue = %v, want %v", err, tt.want)
			}
			if errors.Is(tt.want, ErrURLNotAllowed) {
				var ue *URLError
				if !errors.As(err, &ue) || ue.URL != tt.url {
					t.Errorf("error %v is not a *URLError for %q", err, tt.url)
				}
			}
		})
	}
	if st, _ := ob.Stats(context.Background()); st.Pending != 3 {
		t.Errorf("Pending = %d, want only the 3 allowed events", st.Pending)
	}
}

func TestNewOutboxValidates(t *testing.T) {
	_, pool := startRedis(t)
	if _, err := NewOutbox(nil, OutboxConfig{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("nil pool: %v", err)
	}
	if _, err := NewOutbox(pool, OutboxConfig{URL: "not a url"}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("bad URL: %v", err)
	}
	ob, err := NewOutbox(pool, OutboxConfig{})
	if err != nil {
		t.Fatalf("zero config: %v", err)
	}
	if got := ob.Keys().Due; got != "celerybridge.callback.due" {
		t.Errorf("default due key = %q", got)
	}
}

func TestOutboxRedisDown(t *testing.T) {
	r, pool := startRedis(t)
	ob := newTestOutbox(t, pool, "http://127.0.0.1:1/cb")
	r.Stop()
	ctx := context.Background()
	if err := ob.Enqueue(ctx, Event{CeleryTaskID: "c", Status: StatusSuccess}); !errors.Is(err, ErrRedis) {
		t.Errorf("Enqueue with Redis down = %v, want ErrRedis", err)
	}
	if _, err := ob.Stats(ctx); !errors.Is(err, ErrRedis) {
		t.Errorf("Stats with Redis down = %v, want ErrRedis", err)
	}
	r.Start()
	if err := ob.Enqueue(ctx, Event{CeleryTaskID: "c", Status: StatusSuccess}); err != nil {
		t.Errorf("Enqueue after Redis came back: %v", err)
	}
}
