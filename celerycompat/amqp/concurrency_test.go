package amqp

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"github.com/celerybridge/celerybridge/celerycompat"
)

// TestConcurrentFirstPublishes: many goroutines publishing at once to queues not declared yet
// (the demo's 200 submissions at start) all succeed. Declarations on one channel must not run at
// once: amqp091 hands a synchronous reply to whichever caller reads first, so two concurrent
// declarations could each get the other's reply and fail.
func TestConcurrentFirstPublishes(t *testing.T) {
	tr, v := newTransport(t, Config{Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	const n = 200
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := fmt.Sprintf("conc-%d", i%50)
			errs[i] = tr.PublishBatch(testCtx(t), []*celerycompat.Message{taskMsg(q, i)})[0]
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	ready := 0
	for name, q := range v.Queues(t) {
		if len(name) > 5 && name[:5] == "conc-" {
			ready += q.Ready
		}
	}
	if ready != n {
		t.Fatalf("%d messages queued, want %d", ready, n)
	}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }
