package celerycompat

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkBackendStoreResult is one SUCCESS store round trip (the Lua check-and-SETEX+PUBLISH)
// against a real redis-server.
func BenchmarkBackendStoreResult(b *testing.B) {
	be, _ := newTestBackend(b, BackendConfig{})
	ctx := context.Background()
	result := map[string]any{"sum": 42, "items": []any{"a", "b", "c"}}
	i := 0
	for b.Loop() {
		i++
		if _, err := be.MarkSuccess(ctx, fmt.Sprintf("bench-%d", i), result); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAsyncResultGetAfterStore is Get of an already stored result: SUBSCRIBE, wait for the
// acknowledgement, GET, decode, UNSUBSCRIBE.
func BenchmarkAsyncResultGetAfterStore(b *testing.B) {
	be, _ := newTestBackend(b, BackendConfig{})
	ctx := context.Background()
	i := 0
	for b.Loop() {
		i++
		id := fmt.Sprintf("bench-%d", i)
		if _, err := be.MarkSuccess(ctx, id, i); err != nil {
			b.Fatal(err)
		}
		if _, err := be.AsyncResult(id).Get(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAsyncResultGetWake is a waiting Get woken by a store: the full result round trip a
// producer sees (subscribe, GET, store+PUBLISH, wake, decode).
func BenchmarkAsyncResultGetWake(b *testing.B) {
	be, _ := newTestBackend(b, BackendConfig{})
	ctx := context.Background()
	i := 0
	for b.Loop() {
		i++
		id := fmt.Sprintf("bench-%d", i)
		done := make(chan error, 1)
		go func() { _, err := be.AsyncResult(id).Get(ctx); done <- err }()
		for be.consumer.subscriptions() == 0 { // store only once the Get is subscribed
			time.Sleep(10 * time.Microsecond)
		}
		if _, err := be.MarkSuccess(ctx, id, i); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}
