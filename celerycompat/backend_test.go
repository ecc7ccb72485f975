package celerycompat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/google/go-cmp/cmp"

	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// resultDB is the database the backend tests use (Celery captures used db 1 for results).
const resultDB = 1

// fixedNow is the clock of the captured 5.2.6 SUCCESS in facts A.8.
var fixedNow = time.Date(2026, 11, 26, 1, 1, 48, 86420000, time.UTC)

func newTestBackend(t testing.TB, cfg BackendConfig) (*Backend, *celerytest.Redis) {
	t.Helper()
	r := celerytest.StartRedis(t)
	return backendOn(t, r, cfg), r
}

func backendOn(t testing.TB, r *celerytest.Redis, cfg BackendConfig) *Backend {
	t.Helper()
	b, err := NewBackend(r.Pool(resultDB), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func storedRaw(t testing.TB, r *celerytest.Redis, key string) []byte {
	t.Helper()
	v, err := redis.Bytes(r.Do(resultDB, "GET", key), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	return v
}

var (
	baseKeys     = []string{"status", "result", "traceback", "children", "date_done", "task_id"}
	extendedKeys = []string{"status", "result", "traceback", "children", "date_done", "group_id", "parent_id",
		"name", "args", "kwargs", "worker", "retries", "queue", "task_id"}
)

// TestBackendStoredJSON checks what each Mark* writes against the values captured from Celery
// (facts 5.3 and A.8): the JSON by meaning, the key order byte for byte, and the TTL.
func TestBackendStoredJSON(t *testing.T) {
	const id = "aaaaaaaa-0000-0000-0000-000000000001"
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	msg := &Message{Task: "cap.add", ID: id, Args: []any{2, 5}, Kwargs: map[string]any{}, Group: "gggg",
		ParentID: "pppp", DeliveryInfo: DeliveryInfo{RoutingKey: "celery"}}
	tests := []struct {
		name  string
		cfg   BackendConfig
		store func(context.Context, *Backend) (bool, error)
		want  string
		keys  []string
	}{
		{"success 5.2", BackendConfig{}, func(ctx context.Context, b *Backend) (bool, error) {
			return b.MarkSuccess(ctx, id, 5)
		}, `{"status": "SUCCESS", "result": 5, "traceback": null, "children": [], "date_done": "2026-11-26T01:01:48.086420", "task_id": "` + id + `"}`, baseKeys},
		{"success 5.5 UTC", BackendConfig{PeerVersion: Celery55}, func(ctx context.Context, b *Backend) (bool, error) {
			return b.MarkSuccess(ctx, id, 5)
		}, `{"status": "SUCCESS", "result": 5, "traceback": null, "children": [], "date_done": "2026-11-26T01:01:48.086420+00:00", "task_id": "` + id + `"}`, baseKeys},
		{"success 5.5 Europe/Berlin", BackendConfig{PeerVersion: Celery55, Timezone: berlin}, func(ctx context.Context, b *Backend) (bool, error) {
			return b.MarkSuccess(ctx, id, 5)
		}, `{"status": "SUCCESS", "result": 5, "traceback": null, "children": [], "date_done": "2026-11-26T02:01:48.086420+01:00", "task_id": "` + id + `"}`, baseKeys},
		{"failure custom", BackendConfig{}, func(ctx context.Context, b *Backend) (bool, error) {
			return b.MarkFailure(ctx, id, &TaskError{ExcType: "MyError", ExcModule: "tasks", ExcMessage: []any{"boom"}}, "Traceback (most recent call last):\ntasks.MyError: boom\n")
		}, `{"status": "FAILURE", "result": {"exc_type": "MyError", "exc_message": ["boom"], "exc_module": "tasks"}, "traceback": "Traceback (most recent call last):\ntasks.MyError: boom\n", "children": [], "date_done": "2026-11-26T01:01:48.086420", "task_id": "` + id + `"}`, baseKeys},
		{"failure builtins", BackendConfig{}, func(ctx context.Context, b *Backend) (bool, error) {
			return b.MarkFailure(ctx, id, fmt.Errorf("wrapped: %w", &TaskError{ExcType: "ValueError", ExcModule: "builtins", ExcMessage: []any{"bad", 42}}), "")
		}, `{"status": "FAILURE", "result": {"exc_type": "ValueError", "exc_message": ["bad", 42], "exc_module": "builtins"}, "traceback": null, "children": [], "date_done": "2026-11-26T01:01:48.086420", "task_id": "` + id + `"}`, baseKeys},
		{"failure go error", BackendConfig{}, func(ctx context.Context, b *Backend) (bool, error) {
			return b.MarkFailure(ctx, id, errors.New("boom"), "")
		}, `{"status": "FAILURE", "result": {"exc_type": "GoError", "exc_message": ["boom"], "exc_module": "github.com/celerybridge/celerybridge"}, "traceback": null, "children": [], "date_done": "2026-11-26T01:01:48.086420", "task_id": "` + id + `"}`, baseKeys},
		{"retry", BackendConfig{}, func(ctx context.Context, b *Backend) (bool, error) {
			return b.MarkRetry(ctx, id, &TaskError{ExcType: "MyError", ExcModule: "tasks", ExcMessage: []any{"try again 0"}}, "celery.exceptions.Retry: Retry in 1s\n")
		}, `{"status": "RETRY", "result": {"exc_type": "MyError", "exc_message": ["try again 0"], "exc_module": "tasks"}, "traceback": "celery.exceptions.Retry: Retry in 1s\n", "children": [[["` + id + `", null], null]], "date_done": null, "task_id": "` + id + `"}`, baseKeys},
		{"started", BackendConfig{}, func(ctx context.Context, b *Backend) (bool, error) {
			return b.MarkStarted(ctx, id, 13391, "w1@vm")
		}, `{"status": "STARTED", "result": {"pid": 13391, "hostname": "w1@vm"}, "traceback": null, "children": [], "date_done": null, "task_id": "` + id + `"}`, baseKeys},
		{"revoked expired", BackendConfig{}, func(ctx context.Context, b *Backend) (bool, error) {
			return b.MarkRevoked(ctx, id, RevokedReasonExpired)
		}, `{"status": "REVOKED", "result": {"exc_type": "TaskRevokedError", "exc_message": ["expired"], "exc_module": "celery.exceptions"}, "traceback": null, "children": [], "date_done": "2026-11-26T01:01:48.086420", "task_id": "` + id + `"}`, baseKeys},
		{"success after retry has parent", BackendConfig{}, func(ctx context.Context, b *Backend) (bool, error) {
			return b.MarkSuccess(ctx, id, 70, ResultParentID("aaaaaaaa-0000-0000-0000-000000000004"))
		}, `{"status": "SUCCESS", "result": 70, "traceback": null, "children": [], "date_done": "2026-11-26T01:01:48.086420", "parent_id": "aaaaaaaa-0000-0000-0000-000000000004", "task_id": "` + id + `"}`,
			[]string{"status", "result", "traceback", "children", "date_done", "parent_id", "task_id"}},
		{"group member with callback child", BackendConfig{}, func(ctx context.Context, b *Backend) (bool, error) {
			return b.MarkSuccess(ctx, id, 3, ResultGroupID("gggg"), ResultChildren(ResultTuple("af73f9b6")))
		}, `{"status": "SUCCESS", "result": 3, "traceback": null, "children": [[["af73f9b6", null], null]], "date_done": "2026-11-26T01:01:48.086420", "group_id": "gggg", "task_id": "` + id + `"}`,
			[]string{"status", "result", "traceback", "children", "date_done", "group_id", "task_id"}},
		{"extended", BackendConfig{ResultExtended: true}, func(ctx context.Context, b *Backend) (bool, error) {
			return b.MarkSuccess(ctx, id, 7, ResultRequest(msg, "w4@vm"))
		}, `{"status": "SUCCESS", "result": 7, "traceback": null, "children": [], "date_done": "2026-11-26T01:01:48.086420", "group_id": "gggg", "parent_id": "pppp", "name": "cap.add", "args": [2, 5], "kwargs": {}, "worker": "w4@vm", "retries": 0, "queue": "celery", "task_id": "` + id + `"}`, extendedKeys},
	}
	r := celerytest.StartRedis(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			r.Do(resultDB, "FLUSHDB")
			cfg := tt.cfg
			cfg.Now = func() time.Time { return fixedNow }
			b := backendOn(t, r, cfg)
			stored, err := tt.store(ctx, b)
			if err != nil || !stored {
				t.Fatalf("store: stored=%v err=%v", stored, err)
			}
			key := "celery-task-meta-" + id
			raw := storedRaw(t, r, key)
			if diff := cmp.Diff(celerytest.JSONMeaning(t, []byte(tt.want)), celerytest.JSONMeaning(t, raw)); diff != "" {
				t.Errorf("stored JSON (-want +got):\n%s\ngot: %s", diff, raw)
			}
			if diff := cmp.Diff(tt.keys, celerytest.TopKeys(t, raw)); diff != "" {
				t.Errorf("key order (-want +got):\n%s", diff)
			}
			if !bytes.HasPrefix(raw, []byte(`{"status": "`)) {
				t.Errorf("not written with Python's separators: %s", raw)
			}
			if ttl, _ := redis.Int(r.Do(resultDB, "TTL", key), nil); ttl != 86400 {
				t.Errorf("TTL = %d, want 86400", ttl)
			}
		})
	}
}

func TestBackendResultExpires(t *testing.T) {
	r := celerytest.StartRedis(t)
	tests := []struct {
		expires time.Duration
		wantTTL int
	}{
		{0, 86400},
		{time.Hour, 3600},
		{90*time.Second + 500*time.Millisecond, 90},
		{-1, -1}, // plain SET: no expiry
	}
	for _, tt := range tests {
		t.Run(tt.expires.String(), func(t *testing.T) {
			b := backendOn(t, r, BackendConfig{ResultExpires: tt.expires})
			id := "exp-" + tt.expires.String()
			if _, err := b.MarkSuccess(context.Background(), id, 1); err != nil {
				t.Fatal(err)
			}
			if ttl, _ := redis.Int(r.Do(resultDB, "TTL", "celery-task-meta-"+id), nil); ttl != tt.wantTTL {
				t.Errorf("TTL = %d, want %d", ttl, tt.wantTTL)
			}
		})
	}
}

func TestNewBackendValidation(t *testing.T) {
	r := celerytest.StartRedis(t)
	if _, err := NewBackend(nil, BackendConfig{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("nil pool: err = %v", err)
	}
	if _, err := NewBackend(r.Pool(0), BackendConfig{ResultExpires: 500 * time.Millisecond}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("sub-second expires: err = %v", err)
	}
	b := backendOn(t, r, BackendConfig{})
	if _, err := b.StoreResult(context.Background(), ResultMeta{Status: StateSuccess}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("empty id: err = %v", err)
	}
	if _, err := b.StoreResult(context.Background(), ResultMeta{TaskID: "x"}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("empty status: err = %v", err)
	}
}

// TestBackendSuccessNeverOverwritten covers Celery's deduplication guard: once SUCCESS is stored,
// nothing replaces it, whoever wrote it and however it is formatted.
func TestBackendSuccessNeverOverwritten(t *testing.T) {
	const key = "celery-task-meta-t1"
	tests := []struct {
		name      string
		existing  string // raw value already stored ("" = none)
		store     func(context.Context, *Backend) (bool, error)
		wantStore bool
	}{
		{"success kept against failure", `{"status": "SUCCESS", "result": 1, "task_id": "t1"}`,
			func(ctx context.Context, b *Backend) (bool, error) {
				return b.MarkFailure(ctx, "t1", errors.New("late"), "")
			}, false},
		{"success kept against started", `{"status": "SUCCESS", "result": 1, "task_id": "t1"}`,
			func(ctx context.Context, b *Backend) (bool, error) { return b.MarkStarted(ctx, "t1", 1, "h") }, false},
		{"success kept against success", `{"status": "SUCCESS", "result": 1, "task_id": "t1"}`,
			func(ctx context.Context, b *Backend) (bool, error) { return b.MarkSuccess(ctx, "t1", 2) }, false},
		{"compact python-style success kept", `{"task_id":"t1","result":null,"status":"SUCCESS"}`,
			func(ctx context.Context, b *Backend) (bool, error) { return b.MarkRevoked(ctx, "t1", "") }, false},
		{"failure replaced by success", `{"status": "FAILURE", "result": {"exc_type": "E", "exc_message": [], "exc_module": null}, "task_id": "t1"}`,
			func(ctx context.Context, b *Backend) (bool, error) { return b.MarkSuccess(ctx, "t1", 2) }, true},
		{"SUCCESS only inside the value is not a success", `{"status": "STARTED", "result": {"status": "SUCCESS"}, "task_id": "t1"}`,
			func(ctx context.Context, b *Backend) (bool, error) { return b.MarkSuccess(ctx, "t1", 2) }, true},
		{"undecodable value is replaced", `not json "SUCCESS"`,
			func(ctx context.Context, b *Backend) (bool, error) { return b.MarkSuccess(ctx, "t1", 2) }, true},
		{"nothing stored", "",
			func(ctx context.Context, b *Backend) (bool, error) { return b.MarkSuccess(ctx, "t1", 2) }, true},
	}
	r := celerytest.StartRedis(t)
	b := backendOn(t, r, BackendConfig{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.Do(resultDB, "FLUSHDB")
			if tt.existing != "" {
				r.Do(resultDB, "SET", key, tt.existing)
			}
			stored, err := tt.store(context.Background(), b)
			if err != nil {
				t.Fatal(err)
			}
			if stored != tt.wantStore {
				t.Errorf("stored = %v, want %v", stored, tt.wantStore)
			}
			got := string(storedRaw(t, r, key))
			if !tt.wantStore && got != tt.existing {
				t.Errorf("value changed to %s", got)
			}
			if tt.wantStore && got == tt.existing {
				t.Errorf("value not replaced")
			}
		})
	}
}

// TestBackendSuccessRace races SUCCESS writers against each other and against FAILURE/STARTED
// writers: exactly one SUCCESS is stored and it stays.
func TestBackendSuccessRace(t *testing.T) {
	b, r := newTestBackend(t, BackendConfig{})
	ctx := context.Background()
	const rounds, writers = 20, 16
	for round := range rounds {
		id := fmt.Sprintf("race-%d", round)
		var (
			mu      sync.Mutex
			winners []int
			wg      sync.WaitGroup
			start   = make(chan struct{})
		)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				var stored bool
				var err error
				switch w % 4 {
				case 0, 1:
					stored, err = b.MarkSuccess(ctx, id, w)
				case 2:
					stored, err = b.MarkFailure(ctx, id, errors.New("lost worker"), "")
				default:
					stored, err = b.MarkStarted(ctx, id, w, "h")
				}
				if err != nil {
					t.Error(err)
				}
				if stored && w%4 < 2 {
					mu.Lock()
					winners = append(winners, w)
					mu.Unlock()
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("round %d: %d SUCCESS writes stored (%v), want exactly 1", round, len(winners), winners)
		}
		m, err := b.GetMeta(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if m.Status != StateSuccess || m.Result != json.Number(fmt.Sprint(winners[0])) {
			t.Fatalf("round %d: final %s %v, want SUCCESS %d", round, m.Status, m.Result, winners[0])
		}
	}
	_ = r
}

// TestBackendPublish checks the PUBLISH that wakes Python's get(): on the key itself (no DB
// prefix, result prefix included), with the stored bytes.
func TestBackendPublish(t *testing.T) {
	tests := []struct {
		prefix, channel string
	}{
		{"", "celery-task-meta-p1"},
		{"myapp", "myapp_celery-task-meta-p1"},
		{"myapp:", "myapp:celery-task-meta-p1"},
	}
	r := celerytest.StartRedis(t)
	for _, tt := range tests {
		t.Run(tt.channel, func(t *testing.T) {
			b := backendOn(t, r, BackendConfig{Keys: Keys{ResultPrefix: tt.prefix}})
			conn, err := redis.Dial("tcp", r.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			psc := redis.PubSubConn{Conn: conn}
			if err := psc.Subscribe(tt.channel); err != nil {
				t.Fatal(err)
			}
			if s, ok := psc.Receive().(redis.Subscription); !ok || s.Kind != "subscribe" {
				t.Fatalf("no subscription ack: %v", s)
			}
			if _, err := b.MarkSuccess(context.Background(), "p1", "hello"); err != nil {
				t.Fatal(err)
			}
			msg, ok := psc.ReceiveWithTimeout(5 * time.Second).(redis.Message)
			if !ok {
				t.Fatal("no message published")
			}
			if msg.Channel != tt.channel {
				t.Errorf("channel %q, want %q", msg.Channel, tt.channel)
			}
			if got := storedRaw(t, r, tt.channel); !bytes.Equal(got, msg.Data) {
				t.Errorf("published %s, stored %s", msg.Data, got)
			}
		})
	}
}

// TestBackendDateDoneFormat checks the date_done text per peer version and that it reads back
// as the same instant.
func TestBackendDateDoneFormat(t *testing.T) {
	tokyo := time.FixedZone("JST", 9*3600)
	done := time.Date(2026, 11, 26, 1, 2, 3, 0, time.UTC)
	tests := []struct {
		peer Version
		tz   *time.Location
		want string
	}{
		{Version{}, nil, "2026-11-26T01:02:03"}, // Python isoformat drops zero microseconds
		{Celery53, tokyo, "2026-11-26T01:02:03"},
		{Celery54, tokyo, "2026-11-26T01:02:03+00:00"},
		{Celery55, nil, "2026-11-26T01:02:03+00:00"},
		{Celery55, tokyo, "2026-11-26T10:02:03+09:00"},
	}
	r := celerytest.StartRedis(t)
	for _, tt := range tests {
		t.Run(tt.peer.String()+"/"+fmt.Sprint(tt.tz), func(t *testing.T) {
			b := backendOn(t, r, BackendConfig{PeerVersion: tt.peer, Timezone: tt.tz})
			ctx := context.Background()
			if _, err := b.StoreResult(ctx, ResultMeta{TaskID: "d1", Status: StateSuccess, DateDone: &done}); err != nil {
				t.Fatal(err)
			}
			m, err := b.GetMeta(ctx, "d1")
			if err != nil {
				t.Fatal(err)
			}
			var top map[string]any
			_ = json.Unmarshal(m.Raw, &top)
			if top["date_done"] != tt.want {
				t.Errorf("date_done = %v, want %s", top["date_done"], tt.want)
			}
			if m.DateDone == nil || !m.DateDone.Equal(done) {
				t.Errorf("read back %v, want %v", m.DateDone, done)
			}
			r.Do(resultDB, "DEL", "celery-task-meta-d1")
		})
	}
}

func TestBackendRoundTrip(t *testing.T) {
	b, _ := newTestBackend(t, BackendConfig{ResultExtended: true, Now: func() time.Time { return fixedNow }})
	ctx := context.Background()
	retries := 2
	in := ResultMeta{TaskID: "rt", Status: StateSuccess, Result: map[string]any{"a": []any{1, "x", nil}},
		Children: []any{ResultTuple("c1")}, GroupID: "g", ParentID: "p", Name: "cap.add",
		Args: []any{1}, Kwargs: map[string]any{"k": "v"}, Worker: "w@h", Retries: &retries, Queue: "q"}
	if _, err := b.StoreResult(ctx, in); err != nil {
		t.Fatal(err)
	}
	got, err := b.GetMeta(ctx, "rt")
	if err != nil {
		t.Fatal(err)
	}
	want := in
	want.Result = map[string]any{"a": []any{json.Number("1"), "x", nil}}
	want.Args = []any{json.Number("1")}
	want.DateDone = &fixedNow
	if diff := cmp.Diff(&want, got, cmp.FilterPath(func(p cmp.Path) bool { return p.String() == "Raw" }, cmp.Ignore())); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if err := b.Forget(ctx, "rt"); err != nil {
		t.Fatal(err)
	}
	if m, err := b.GetMeta(ctx, "rt"); err != nil || m.Status != StatePending || m.Result != nil {
		t.Errorf("after Forget: %+v, %v", m, err)
	}
}
