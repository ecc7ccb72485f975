package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/google/uuid"
)

// BenchSave measures s alone: callbacks saved per second ("saves/s") by 128 concurrent
// requests, each a distinct callback shaped as this module's sender makes them (a business id,
// a random Celery id, the event id derived from the business id), as a fleet of workers sends.
// Every store runs the same load, so their figures compare.
func BenchSave(b *testing.B, s callback.Store) {
	body := []byte(`{"task_id":"biz-x","status":"success","result":{"status":"success","index":1},"error":null,"timestamp":"2026-11-26T07:00:00.123456789Z","celery_task_id":"x","task_name":"tasks.process_task","event_id":"e","attempt":1}`)
	run := uuid.NewString() // a store reused across runs (b.N grows) gets new events each time
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
				task := fmt.Sprint("biz-", run, "-", i)
				cb := callback.Callback{EventID: callback.EventID(task, "success"), TaskID: task, CeleryTaskID: celeryIDs[i],
					TaskName: "tasks.process_task", Status: callback.StatusSuccess, Result: []byte(`{"status":"success","index":1}`),
					Body: body, ReceivedAt: time.Now()}
				ins, err := s.Save(context.Background(), cb)
				if err != nil || !ins {
					b.Errorf("Save = %v, %v; want a new callback stored", ins, err)
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
