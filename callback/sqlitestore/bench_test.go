package sqlitestore

import (
	"testing"

	"github.com/celerybridge/celerybridge/callback/storetest"
)

// BenchmarkSave measures the SQLite store alone (group-committed, WAL, synchronous=FULL) under
// storetest.BenchSave's load: 128 concurrent Saves of callbacks with business ids and random
// Celery ids.
//
//	go test -run '^$' -bench Save -benchtime 30000x ./callback/sqlitestore/
func BenchmarkSave(b *testing.B) {
	storetest.BenchSave(b, newSQLite(b, ""))
}
