package celerycompat_test

import (
	"context"
	"testing"
	"time"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// BenchmarkPublish measures publish throughput to a real redis-server from one goroutine: Go
// single sends, Go batched sends (1000 per pipeline), both again with a deadline on ctx (the
// script that checks it on Redis's clock), and, in the same run, Python Celery 5.7's apply_async
// in a loop (testdata/python/send.py, timed inside Python). Run:
//
//	go test -run '^$' -bench Publish -benchtime 1x ./celerycompat/
func BenchmarkPublish(b *testing.B) {
	celerytest.Python(b, celerytest.CeleryNew)
	const single, batched, batch, pyN = 20000, 100000, 1000, 3000
	ctx := context.Background()
	args, kwargs := []any{"3f2a"}, map[string]any{"data": map[string]any{"task_index": 1, "content": "test task 1"}}
	for range b.N {
		s := benchStack(b)
		start := time.Now()
		for range single {
			if _, err := s.producer.Send(ctx, "tasks.process_task", args, kwargs); err != nil {
				b.Fatal(err)
			}
		}
		singleRate := single / time.Since(start).Seconds()

		reqs := make([]cc.TaskRequest, batch)
		for i := range reqs {
			reqs[i] = cc.TaskRequest{Name: "tasks.process_task", Args: args, Kwargs: kwargs}
		}
		start = time.Now()
		for range batched / batch {
			if _, errs := s.producer.SendBatch(ctx, reqs); errs[0] != nil {
				b.Fatal(errs[0])
			}
		}
		batchRate := batched / time.Since(start).Seconds()

		// The same with a deadline on ctx: each publish is then the script that checks it on
		// Redis's clock (BrokerConfig.ClientSideDeadline).
		dctx, cancel := context.WithTimeout(ctx, time.Hour)
		start = time.Now()
		for range single {
			if _, err := s.producer.Send(dctx, "tasks.process_task", args, kwargs); err != nil {
				b.Fatal(err)
			}
		}
		singleDLRate := single / time.Since(start).Seconds()
		start = time.Now()
		for range batched / batch {
			if _, errs := s.producer.SendBatch(dctx, reqs); errs[0] != nil {
				b.Fatal(errs[0])
			}
		}
		batchDLRate := batched / time.Since(start).Seconds()
		cancel()

		sent := s.pySend(celerytest.CeleryNew, map[string]any{"name": "tasks.process_task", "args": args, "kwargs": kwargs, "count": pyN})
		pyRate := pyN / sent.Seconds
		b.ReportMetric(singleRate, "go_single_msgs/s")
		b.ReportMetric(batchRate, "go_batch_msgs/s")
		b.ReportMetric(singleDLRate, "go_single_deadline_msgs/s")
		b.ReportMetric(batchDLRate, "go_batch_deadline_msgs/s")
		b.ReportMetric(pyRate, "py_apply_async_msgs/s")
		b.ReportMetric(singleRate/pyRate, "single_vs_py_x")
		b.ReportMetric(batchRate/pyRate, "batch_vs_py_x")
	}
}
