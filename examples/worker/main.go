// Command worker runs tasks.process_task(task_id, data) in Go, side by side with (or instead of)
// the original Python worker (celery -A tasks.celery_app worker -c 1):
//
//	TASK_SLEEP=1 CONCURRENCY=1 CALLBACK_URL=http://127.0.0.1:8001/receive-task-result go run ./examples/worker
//
// Each finished task's callback is recorded in a durable outbox in Redis before the ack and
// delivered by a dispatcher in this process (signed with CALLBACK_SECRET when set). A task fails
// on purpose when its data has "fail": true, or every FAIL_EVERY-th task. Flags override the
// environment; see -h and package examples/internal/rig.
//
// It stops as a Celery worker does: the first SIGINT (Ctrl-C) or SIGTERM is a warm shutdown,
// which waits for the running tasks (bounded by WARM_SHUTDOWN_TIMEOUT, default none); a second
// is a cold shutdown, which stops them and hands their messages back to the queue. Both exit 0.
package main

import (
	"context"
	"log/slog"

	"github.com/celerybridge/celerybridge/examples/internal/rig"
)

func main() {
	rig.MainWorker("worker", func(ctx, cold context.Context, cfg rig.Config, log *slog.Logger) error {
		deps, closePools, err := rig.OpenDeps(cfg, log)
		if err != nil {
			return err
		}
		defer closePools()
		w, d, err := rig.NewWorker(ctx, cfg, deps)
		if err != nil {
			return err
		}
		log.Info("worker started", "broker", rig.Redacted(cfg.RedisURL), "results", rig.Redacted(cfg.ResultsURL()), "concurrency", cfg.Concurrency,
			"task_sleep", cfg.TaskSleep, "callback_url", cfg.CallbackURL, "fail_every", cfg.FailEvery)
		return rig.RunWorker(ctx, cold, w, d, cfg.WarmShutdownTimeout, log)
	})
}
