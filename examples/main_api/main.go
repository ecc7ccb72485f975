// Command main_api is the task API of the original rig (main_api.py) in Go, on :8000:
//
//	POST /submit-task, GET /task-status/{id}, GET /healthz, GET /metrics,
//	GET /callbacks/dead, POST /callbacks/dead/replay
//
// Configuration comes from the environment (REDIS_URL, CELERY_RESULT_BACKEND, PORT,
// MAX_BODY_BYTES, RESULT_EXPIRES, READ_TIMEOUT, MAX_CONCURRENT, REDIS_TIMEOUT, ...) and flags
// override it; see -h, and the limits in force in package examples/internal/rig.
package main

import (
	"context"
	"log/slog"
	"net"

	"github.com/celerybridge/celerybridge/examples/internal/rig"
)

func main() {
	rig.Main("main_api", func(ctx context.Context, cfg rig.Config, log *slog.Logger) error {
		deps, closePools, err := rig.OpenDeps(cfg, log)
		if err != nil {
			return err
		}
		defer closePools()
		e, err := rig.NewAPI(cfg, deps)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", cfg.Addr(rig.DefaultAPIPort))
		if err != nil {
			return err
		}
		log.Info("main_api listening", "addr", ln.Addr().String(), "broker", rig.Redacted(cfg.RedisURL), "results", rig.Redacted(cfg.ResultsURL()))
		return rig.Serve(ctx, e, ln, cfg.ShutdownTimeout)
	})
}
