package celeryhook_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/celerybridge/celerybridge/callback/celeryhook"
	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// TestWorkerCallbacksArriveOnce runs tasks on a real worker with the hooks connected and a
// dispatcher delivering to the Go receiver: every outcome arrives once, with the business id,
// status, result and error of the original payload.
func TestWorkerCallbacksArriveOnce(t *testing.T) {
	r := celerytest.StartRedis(t)
	pool := r.Pool(0)
	broker, err := cc.NewBroker(pool, cc.BrokerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	backend, err := cc.NewBackend(r.Pool(1), cc.BackendConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	store := callback.NewMemoryStore()
	h, err := callback.NewHandler(callback.HandlerConfig{Store: store, Secret: []byte("s3cret")})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	ob, err := callback.NewOutbox(pool, callback.OutboxConfig{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	d, err := callback.NewDispatcher(ob, callback.DispatcherConfig{Secret: []byte("s3cret")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = d.Run(ctx) }()

	w, err := cc.NewWorker(broker, cc.WorkerConfig{Backend: backend, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	celeryhook.Connect(w.Hooks(), ob, celeryhook.Options{URLKwarg: "callback_url"}, "tasks.process_task")
	var runs atomic.Int32
	_ = w.Register("tasks.process_task", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		runs.Add(1)
		if req.Kwargs["fail"] == true {
			return nil, errors.New("asked to fail")
		}
		return map[string]any{"status": "success", "business_task_id": req.Kwargs["task_id"]}, nil
	}))
	go func() { _ = w.Run(ctx) }()

	producer, err := cc.NewProducer(broker, cc.ProducerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	for i := range n {
		kw := map[string]any{"task_id": fmt.Sprintf("biz-%03d", i), "data": map[string]any{"i": i}, "fail": i%10 == 0}
		if _, err := producer.Send(ctx, "tasks.process_task", nil, kw); err != nil {
			t.Fatal(err)
		}
	}
	// A per-task URL outside the allow-list is a permanent hook failure: logged, acked, not looped.
	bad, err := producer.Send(ctx, "tasks.process_task", nil, map[string]any{"task_id": "biz-bad", "callback_url": "http://169.254.169.254/steal"})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, _ := store.Stats(ctx)
		if st.Unique == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d callbacks arrived", st.Unique, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := range n {
		cbs, _ := store.ByTaskID(ctx, fmt.Sprintf("biz-%03d", i))
		want := callback.StatusSuccess
		if i%10 == 0 {
			want = callback.StatusFailed
		}
		if len(cbs) != 1 || cbs[0].Status != want {
			t.Fatalf("biz-%03d: %+v, want one %s callback", i, cbs, want)
		}
		if want == callback.StatusFailed && (cbs[0].Error == nil || *cbs[0].Error != "asked to fail") {
			t.Fatalf("biz-%03d: error %v, want \"asked to fail\"", i, cbs[0].Error)
		}
	}
	if meta, err := backend.AsyncResult(bad.ID).Wait(ctx); err != nil || meta.Status != cc.StateSuccess {
		t.Fatalf("task with a forbidden callback URL: %v %v", meta, err)
	}
	time.Sleep(200 * time.Millisecond)
	if got := runs.Load(); got != n+1 {
		t.Fatalf("handler ran %d times, want %d (the forbidden URL must not make the task loop)", got, n+1)
	}
}
