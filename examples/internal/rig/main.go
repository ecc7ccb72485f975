package rig

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// Main is the shared body of the HTTP services: it reads the configuration from the environment
// and the command-line flags (flags win), validates it, runs run with a context cancelled by the
// first SIGINT or SIGTERM (run then drains and returns), and exits non-zero with a log line if run
// fails. A second signal ends the process at once, as the signal's default.
func Main(name string, run func(ctx context.Context, cfg Config, log *slog.Logger) error) {
	main(name, false, func(ctx, _ context.Context, cfg Config, log *slog.Logger) error { return run(ctx, cfg, log) })
}

// MainWorker is Main for a service with Celery's two shutdowns (the worker): the first SIGINT or
// SIGTERM cancels warm (a warm shutdown: finish what is running), the second cancels cold (a
// cold shutdown: stop what is running, handing it back). Both end with exit status 0 when run
// returns nil.
func MainWorker(name string, run func(warm, cold context.Context, cfg Config, log *slog.Logger) error) {
	main(name, true, run)
}

func main(name string, twoStage bool, run func(warm, cold context.Context, cfg Config, log *slog.Logger) error) {
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
	warm, stopWarm := context.WithCancel(context.Background())
	defer stopWarm()
	cold, stopCold := context.WithCancel(context.Background())
	defer stopCold()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go watchSignals(sigs, done, twoStage, stopWarm, stopCold, log)
	err = run(warm, cold, cfg, log)
	close(done)
	signal.Stop(sigs)
	if err != nil {
		fail(err)
	}
}

// watchSignals turns the first signal into a warm shutdown and, when twoStage, the second into a
// cold one; otherwise it hands the second back to the signal's default (the process ends).
func watchSignals(sigs chan os.Signal, done <-chan struct{}, twoStage bool, warm, cold context.CancelFunc, log *slog.Logger) {
	select {
	case s := <-sigs:
		if !twoStage {
			log.Info("shutting down: finishing the requests in flight (signal again to quit at once)", "signal", s.String())
			signal.Stop(sigs)
			warm()
			return
		}
		log.Info("warm shutdown: finishing the running tasks (signal again for a cold shutdown)", "signal", s.String())
		warm()
	case <-done:
		return
	}
	select {
	case s := <-sigs:
		log.Info("cold shutdown: stopping the running tasks and handing them back to the queue", "signal", s.String())
		cold()
	case <-done:
	}
}
