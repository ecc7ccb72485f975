package pgstore

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/celerybridge/celerybridge/callback/sqlitestore"
	"github.com/celerybridge/celerybridge/callback/storetest"
)

// BenchmarkSave compares saves/s of the PostgreSQL store (server started by TestMain, default
// settings: fsync and synchronous_commit on) and the SQLite store (WAL, synchronous=FULL) in
// the same run, under storetest.BenchSave's load (128 concurrent Saves).
//
//	go test -run '^$' -bench Save -benchtime 30000x ./callback/pgstore/
func BenchmarkSave(b *testing.B) {
	b.Run("postgres", func(b *testing.B) {
		s, _ := newStore(b)
		storetest.BenchSave(b, s)
	})
	b.Run("sqlite", func(b *testing.B) {
		s, err := sqlitestore.New(context.Background(), filepath.Join(b.TempDir(), "callbacks.db"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close() })
		storetest.BenchSave(b, s)
	})
}
