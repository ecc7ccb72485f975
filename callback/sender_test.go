package callback

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// TestSenderResponses: what the built-in sender makes of the receiver's answers. A 2xx with a
// body far longer than the sender reads is still delivered; a 500's body becomes the recorded
// error; a receiver that closes each kept-alive connection after one request (as one with a
// short idle timeout does) costs no failed attempts, because the request is sent again on a new
// connection.
func TestSenderResponses(t *testing.T) {
	r, pool := startRedis(t)
	store := NewMemoryStore()
	h, err := NewHandler(HandlerConfig{Store: store, Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	var failed atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(discardWriter{w}, r)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(strings.Repeat("x", 4*maxResponseRead)))
	})
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) {
		if failed.CompareAndSwap(false, true) {
			http.Error(w, "database\nlocked", http.StatusInternalServerError)
			return
		}
		h.ServeHTTP(w, r)
	})
	mux.Handle("/close", h)
	srv := httptest.NewUnstartedServer(mux)
	// The server closes a kept-alive connection 5 ms after its last request; the sender finds
	// out only when it reuses it.
	srv.Config.IdleTimeout = 5 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)

	t.Run("2xx with a long body", func(t *testing.T) {
		ob := newTestOutbox(t, pool, srv.URL+"/big", func(c *OutboxConfig) { c.Prefix = "big." })
		evs := events("big", 3)
		enqueueAll(t, ob, evs)
		runDispatcher(t, ob, fastDispatch())
		if st := waitDrained(t, ob, 10*time.Second); st.Dead != 0 {
			t.Fatalf("Stats %+v", st)
		}
		for _, ev := range evs {
			if cbs, _ := store.ByTaskID(context.Background(), ev.TaskID); len(cbs) != 1 || cbs[0].Attempt != 1 {
				t.Errorf("%s: stored %+v; want one callback from attempt 1", ev.TaskID, cbs)
			}
		}
	})
	t.Run("500 body recorded", func(t *testing.T) {
		ob := newTestOutbox(t, pool, srv.URL+"/fail", func(c *OutboxConfig) { c.Prefix = "fail." })
		ev := events("fail", 1)[0]
		enqueueAll(t, ob, []Event{ev})
		cfg := fastDispatch()
		cfg.BackoffBase, cfg.BackoffCap = 300*time.Millisecond, 300*time.Millisecond
		runDispatcher(t, ob, cfg)
		var last lastFailure
		waitFor(t, 10*time.Second, "the failed attempt to be recorded", func() (bool, string) {
			b, _ := redis.Bytes(r.Do(0, "HGET", ob.Keys().Last, ev.ID()), nil)
			return json.Unmarshal(b, &last) == nil, string(b)
		})
		if last.Status != http.StatusInternalServerError || last.Error != "database locked" {
			t.Errorf("last failure %+v, want 500 with %q", last, "database locked")
		}
		waitDrained(t, ob, 10*time.Second)
	})
	t.Run("server closes kept-alive connections", func(t *testing.T) {
		ob := newTestOutbox(t, pool, srv.URL+"/close", func(c *OutboxConfig) { c.Prefix = "close." })
		evs := events("close", 40)
		cfg := fastDispatch()
		cfg.Concurrency = 2
		runDispatcher(t, ob, cfg)
		for _, ev := range evs { // one at a time, each after the server closed the last connection
			enqueueAll(t, ob, []Event{ev})
			time.Sleep(20 * time.Millisecond)
		}
		if st := waitDrained(t, ob, 10*time.Second); st.Dead != 0 {
			t.Fatalf("Stats %+v", st)
		}
		for _, ev := range evs {
			cbs, err := store.ByTaskID(context.Background(), ev.TaskID)
			if err != nil || len(cbs) != 1 || cbs[0].Attempt != 1 {
				t.Errorf("%s: stored %+v, %v; want one callback from attempt 1: a closed kept-alive connection is retried at once", ev.TaskID, cbs, err)
			}
		}
		if st, _ := store.Stats(context.Background()); st.Unique != 3+1+40 {
			t.Errorf("store Stats %+v, want %d unique", st, 44)
		}
	})
}

// discardWriter lets the handler run without writing its own answer.
type discardWriter struct{ http.ResponseWriter }

func (discardWriter) Header() http.Header         { return http.Header{} }
func (discardWriter) WriteHeader(int)             {}
func (discardWriter) Write(b []byte) (int, error) { return len(b), nil }
