package sqlitestore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/google/uuid"
)

// BenchmarkSQLiteSave measures the SQLite store alone: callbacks/s saved by 128 concurrent
// requests, group-committed, synchronous=FULL, with random Celery ids as a real fleet sends.
//
//	go test -run '^$' -bench SQLiteSave -benchtime 30000x ./callback/sqlitestore/
func BenchmarkSQLiteSave(b *testing.B) {
	s := newSQLite(b, "")
	body := []byte(`{"task_id":"biz-x","status":"success","result":{"status":"success","index":1},"error":null,"timestamp":"2026-11-26T07:00:00.123456789Z","celery_task_id":"x","task_name":"tasks.process_task","event_id":"e","attempt":1}`)
	celeryIDs := make([]string, b.N)
	for i := range celeryIDs {
		celeryIDs[i] = uuid.NewString()
	}
	var wg sync.WaitGroup
	next := make(chan int, 1024)
	b.ResetTimer()
	start := time.Now()
	for range 128 {
		wg.Go(func() {
			for i := range next {
				cb := callback.Callback{EventID: callback.EventID(celeryIDs[i], "success"), TaskID: fmt.Sprint("biz-", i), CeleryTaskID: celeryIDs[i],
					TaskName: "tasks.process_task", Status: callback.StatusSuccess, Result: []byte(`{"status":"success","index":1}`), Body: body, ReceivedAt: time.Now()}
				if _, err := s.Save(context.Background(), cb); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for i := range b.N {
		next <- i
	}
	close(next)
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "saves/s")
}
