// Command callback_receiver is the callback service of the original rig (callback_receiver.py)
// in Go, on :8001:
//
//	POST /receive-task-result, GET /callbacks/{id}, GET /callbacks/stats, GET /healthz
//
// Callbacks are kept in SQLite (CALLBACK_DB, default callbacks.db; ":memory:" for none; a
// postgres:// URL for PostgreSQL, which several receivers may share) and, with
// CALLBACK_SECRET set, must be signed. Bodies, headers, timeouts and concurrency are bounded
// (MAX_BODY_BYTES, MAX_HEADER_BYTES, HEADER_TIMEOUT, READ_TIMEOUT, IDLE_TIMEOUT, MAX_CONCURRENT).
// Flags override the environment; see -h, and the limits in force in package
// examples/internal/rig.
package main

import (
	"context"
	"log/slog"
	"net"

	"github.com/celerybridge/celerybridge/examples/internal/rig"
)

func main() {
	rig.Main("callback_receiver", func(ctx context.Context, cfg rig.Config, log *slog.Logger) error {
		store, closeStore, err := rig.OpenStore(ctx, cfg)
		if err != nil {
			return err
		}
		defer closeStore()
		e, err := rig.NewReceiver(cfg, store, log)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", cfg.Addr(rig.DefaultReceiverPort))
		if err != nil {
			return err
		}
		log.Info("callback_receiver listening", "addr", ln.Addr().String(), "db", rig.RedactDB(cfg.CallbackDB),
			"signed", cfg.CallbackSecret != "")
		return rig.Serve(ctx, e, ln, cfg.ShutdownTimeout)
	})
}
