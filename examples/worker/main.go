// Command worker runs tasks.process_task(task_id, data) in Go, side by side with (or instead of)
// the original Python worker (celery -A tasks.celery_app worker -c 1):
//
//	TASK_SLEEP=1 CONCURRENCY=1 CALLBACK_URL=http://127.0.0.1:8001/receive-task-result go run ./examples/worker
//
// Each finished task's callback is recorded in a durable outbox in Redis before the ack and
// delivered by a dispatcher in this process (signed with CALLBACK_SECRET when set). A task fails
// on purpose when its data has "fail": true, or every FAIL_EVERY-th task. Flags override the
// environment; see -h and package examples/internal/rig.
package main

import (
	"context"
	"log/slog"

	"github.com/celerybridge/celerybridge/examples/internal/rig"
)

func main() {
	rig.Main("worker", func(ctx context.Context, cfg rig.Config, log *slog.Logger) error {
		deps, closePools, err := rig.OpenDeps(cfg, log)
		if err != nil {
			return err
		}
		defer closePools()
		w, d, err := rig.NewWorker(ctx, cfg, deps)
		if err != nil {
			return err
		}
		log.Info("worker started", "redis", rig.Redacted(cfg.RedisURL), "concurrency", cfg.Concurrency,
			"task_sleep", cfg.TaskSleep, "callback_url", cfg.CallbackURL, "fail_every", cfg.FailEvery)
		return rig.RunWorker(ctx, w, d, cfg.ShutdownTimeout)
	})
}
