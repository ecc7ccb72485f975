// Command callback_receiver is the callback service of the original rig (callback_receiver.py)
// in Go, on :8001:
//
//	POST /receive-task-result, GET /callbacks/{id}, GET /callbacks/stats, GET /healthz
//
// Callbacks are kept in SQLite (CALLBACK_DB, default callbacks.db; ":memory:" for none) and, with
// CALLBACK_SECRET set, must be signed. Flags override the environment; see -h and package
// examples/internal/rig.
package main

import (
	"context"
	"flag"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/celerybridge/celerybridge/examples/internal/rig"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("callback_receiver", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	cfg, err := rig.ConfigFromEnv(os.Getenv)
	if err != nil {
		return err
	}
	cfg.RegisterFlags(flag.CommandLine)
	flag.Parse()
	if err := cfg.Validate(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	store, closeStore, err := rig.OpenStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeStore()
	e, err := rig.NewReceiver(ctx, cfg, store, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr(rig.DefaultReceiverPort))
	if err != nil {
		return err
	}
	log.Info("callback_receiver listening", "addr", ln.Addr().String(), "db", cfg.CallbackDB,
		"signed", cfg.CallbackSecret != "")
	return rig.Serve(ctx, e, ln, cfg.ShutdownTimeout)
}
