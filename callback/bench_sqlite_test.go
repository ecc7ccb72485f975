package callback_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/celerybridge/celerybridge/callback/sqlitestore"
)

// BenchmarkDelivery: callbacks/s from a full outbox through a dispatcher process to the Go
// receiver storing in SQLite (WAL, synchronous=FULL); see benchDelivery.
//
//	go test -run '^$' -bench BenchmarkDelivery -benchtime 20000x ./callback/
func BenchmarkDelivery(b *testing.B) {
	s, err := sqlitestore.New(context.Background(), filepath.Join(b.TempDir(), "callbacks.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	callback.BenchDelivery(b, s)
}
