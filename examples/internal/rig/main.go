package rig

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// Main is the shared body of the example commands: it reads the configuration from the
// environment and the command-line flags (flags win), validates it, runs run with a context
// cancelled by SIGINT or SIGTERM, and exits non-zero with a log line if run fails.
func Main(name string, run func(ctx context.Context, cfg Config, log *slog.Logger) error) {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	fail := func(err error) {
		log.Error(name, "err", err)
		os.Exit(1)
	}
	cfg, err := ConfigFromEnv(os.Getenv)
	if err != nil {
		fail(err)
	}
	cfg.RegisterFlags(flag.CommandLine)
	flag.Parse()
	if err := cfg.Validate(); err != nil {
		fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg, log)
	stop()
	if err != nil {
		fail(err)
	}
}
