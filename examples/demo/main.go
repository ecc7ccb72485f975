// Command demo runs the whole original rig in one process and checks it, with one command:
//
//	go run ./examples/demo
//
// It starts the callback receiver, the worker and the task API (the same code as
// examples/callback_receiver, examples/worker and examples/main_api) on free loopback ports, on
// an embedded Redis (miniredis, in this process) unless REDIS_URL names a real one; submits 1000
// tasks at once with the load tester (examples/loadtest); waits for every callback; prints the
// submission summary and the consistency report; and stops everything cleanly. The exit status
// is 0 only when submitted = processed = callbacks received with no duplicates.
//
// Defaults, chosen to finish in a few seconds on two cores: tasks take no time (TASK_SLEEP=0) and
// the worker runs one at a time (CONCURRENCY=1, as the original). -original reproduces the
// original exactly: 1 s per task, one at a time, 1000 tasks, which takes about 17 minutes
// (-original -n 20 takes 20 seconds).
//
//	go run ./examples/demo -n 200 -sleep 5ms -concurrency 4
//	go run ./examples/demo -original
//	REDIS_URL=redis://127.0.0.1:6379/15 go run ./examples/demo   # a real Redis: a spare DB no other worker consumes from
//	CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/demo go run ./examples/demo   # tasks over RabbitMQ
//
// With CELERY_BROKER_URL (or -broker) set to an amqp:// URL, tasks go through that RabbitMQ
// (a vhost no other worker consumes from); results, id mappings and the callback outbox stay in
// Redis (the embedded one, or REDIS_URL).
//
// TASK_SLEEP and CONCURRENCY from the environment replace the defaults; flags replace both.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/celerybridge/celerybridge/callback"
	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/examples/internal/loadtest"
	"github.com/celerybridge/celerybridge/examples/internal/rig"
	"github.com/labstack/echo/v4"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the demo's flags.
type options struct {
	n                 int
	sleep             time.Duration
	concurrency       int
	submitConcurrency int
	timeout           time.Duration
	original          bool
	verbose           bool
	progress          bool
	redisURL          string
	brokerURL         string
	out               string
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sleepDef, concDef := time.Duration(0), 1
	if v := getenv("TASK_SLEEP"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 {
			return o, fmt.Errorf("TASK_SLEEP=%q: want seconds, e.g. 0 or 0.005", v)
		}
		sleepDef = time.Duration(f * float64(time.Second))
	}
	if v := getenv("CONCURRENCY"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return o, fmt.Errorf("CONCURRENCY=%q: want a positive integer", v)
		}
		concDef = n
	}
	fs.IntVar(&o.n, "n", loadtest.DefaultN, "tasks to submit")
	fs.DurationVar(&o.sleep, "sleep", sleepDef, "how long each task works (TASK_SLEEP, in seconds)")
	fs.IntVar(&o.concurrency, "concurrency", concDef, "tasks the worker runs at once, 1 as the original (CONCURRENCY)")
	fs.IntVar(&o.submitConcurrency, "submit-concurrency", 0, "submissions in flight; 0: all at once, as the original")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "bound on the load test (-original: 45m)")
	fs.BoolVar(&o.original, "original", false, "the original exactly: 1 s per task, one at a time, 1000 tasks (~17 min; -n still applies)")
	fs.BoolVar(&o.verbose, "v", false, "service logs (every callback, every failure) to stderr")
	fs.BoolVar(&o.progress, "progress", true, "progress bars on stderr")
	fs.StringVar(&o.redisURL, "redis", getenv("REDIS_URL"), "a real Redis to use instead of the embedded one (REDIS_URL): one no other worker consumes from, since they would take the demo's tasks")
	fs.StringVar(&o.brokerURL, "broker", getenv("CELERY_BROKER_URL"), "an amqp:// RabbitMQ to carry the tasks (CELERY_BROKER_URL); empty: the Redis carries them")
	fs.StringVar(&o.out, "out", "", "write submitted_tasks.txt lines here; empty: none")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.original {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		o.sleep, o.concurrency = time.Second, 1
		if !set["n"] {
			o.n = loadtest.DefaultN
		}
		if !set["timeout"] {
			o.timeout = 45 * time.Minute
		}
	}
	switch {
	case o.n < 1:
		return o, errors.New("-n must be positive")
	case o.concurrency < 1:
		return o, errors.New("-concurrency must be positive")
	case o.sleep < 0 || o.timeout <= 0 || o.submitConcurrency < 0:
		return o, errors.New("-sleep, -timeout and -submit-concurrency must not be negative")
	case o.brokerURL != "" && !(rig.Config{RedisURL: o.brokerURL}).BrokerIsAMQP():
		return o, fmt.Errorf("-broker (CELERY_BROKER_URL) %s: want an amqp:// URL; a Redis broker goes in -redis (REDIS_URL)", rig.Redacted(o.brokerURL))
	}
	return o, nil
}

// run is the demo; it returns the exit status: 0 consistent, 1 inconsistent, 2 could not run.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 2
	}
	rep, err := demo(ctx, o, getenv, stdout, stderr)
	if rep == nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}
	return 0
}

// demo starts the services, runs the load test and stops the services. The report is nil when
// the load test could not run.
func demo(ctx context.Context, o options, getenv func(string) string, stdout, stderr io.Writer) (rep *loadtest.Report, err error) {
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	redisURL, redisName := o.redisURL, o.redisURL
	if redisURL == "" {
		m := miniredis.NewMiniRedis()
		if err := m.StartAddr("127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("embedded redis: %w", err)
		}
		defer m.Close()
		redisURL = "redis://" + m.Addr() + "/0"
		redisName = "embedded Redis (miniredis, in this process) at " + m.Addr()
	}

	recvLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	apiLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		recvLn.Close()
		return nil, err
	}
	receiverURL, apiURL := "http://"+recvLn.Addr().String(), "http://"+apiLn.Addr().String()

	cfg, err := rig.ConfigFromEnv(func(name string) string {
		switch name {
		case "REDIS_URL":
			return redisURL
		case "CELERY_BROKER_URL":
			return o.brokerURL // empty: the Redis is the broker too
		case "CELERY_RESULT_BACKEND", "RESULT_URL", "PORT", "TASK_SLEEP", "CONCURRENCY":
			return "" // the demo decides these
		}
		return getenv(name)
	})
	if err != nil {
		recvLn.Close()
		apiLn.Close()
		return nil, err
	}
	cfg.CallbackURL = receiverURL + "/receive-task-result"
	cfg.TaskSleep, cfg.Concurrency = o.sleep, o.concurrency
	cfg.CallbackDB = ":memory:"
	cfg.ShutdownTimeout = 10 * time.Second
	if err := cfg.Validate(); err != nil {
		recvLn.Close()
		apiLn.Close()
		return nil, err
	}

	fmt.Fprintf(stdout, "demo: %d tasks, each working %v (TASK_SLEEP=%g), worker concurrency %d%s, submissions %s\n",
		o.n, o.sleep, o.sleep.Seconds(), o.concurrency, oneAtATime(o.concurrency), submitText(o.submitConcurrency))
	if o.brokerURL != "" {
		fmt.Fprintf(stdout, "demo: broker: RabbitMQ at %s\n", rig.Redacted(o.brokerURL))
		fmt.Fprintf(stdout, "demo: redis (results, callback outbox): %s\n", redisName)
	} else {
		fmt.Fprintf(stdout, "demo: redis: %s\n", redisName)
	}
	fmt.Fprintf(stdout, "demo: callback receiver %s, task API %s, worker and callback dispatcher in this process\n", receiverURL, apiURL)

	svc, err := startServices(ctx, cfg, logger, recvLn, apiLn)
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := svc.stop(); serr != nil {
			fmt.Fprintf(stderr, "demo: shutdown: %v\n", serr)
			if err == nil {
				err = serr
			}
		}
	}()
	if err := waitHealthy(ctx, apiURL+"/healthz", receiverURL+"/healthz"); err != nil {
		return nil, err
	}

	ltc := loadtest.Config{
		APIURL:        apiURL,
		N:             o.n,
		Concurrency:   o.submitConcurrency,
		Timeout:       o.timeout,
		Source:        &loadtest.ReceiverSource{URL: receiverURL},
		RedisURL:      redisURL,
		SubmittedFile: o.out,
	}
	if o.progress {
		ltc.Progress = stderr
	}
	rep, err = loadtest.Run(ctx, ltc)
	if rep != nil {
		rep.Print(stdout)
	}
	return rep, err
}

func oneAtATime(c int) string {
	if c == 1 {
		return " (one at a time, as the original)"
	}
	return ""
}

func submitText(c int) string {
	if c == 0 {
		return "all at once (as the original's thread per task)"
	}
	return fmt.Sprintf("%d at a time", c)
}

// services are the receiver, API and worker running in goroutines.
type services struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   []error
	close  func() error
}

func startServices(ctx context.Context, cfg rig.Config, logger *slog.Logger, recvLn, apiLn net.Listener) (*services, error) {
	deps, closePools, err := rig.OpenDeps(cfg, logger)
	if err != nil {
		recvLn.Close()
		apiLn.Close()
		return nil, err
	}
	recv, api, w, d, err := func() (*echo.Echo, *echo.Echo, *celerycompat.Worker, *callback.Dispatcher, error) {
		recv, err := rig.NewReceiver(cfg, callback.NewMemoryStore(), logger)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		api, err := rig.NewAPI(cfg, deps)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		w, d, err := rig.NewWorker(ctx, cfg, deps)
		return recv, api, w, d, err
	}()
	if err != nil {
		recvLn.Close()
		apiLn.Close()
		closePools()
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &services{cancel: cancel, close: closePools}
	s.goRun("callback receiver", func() error { return rig.Serve(sctx, recv, recvLn, cfg.ShutdownTimeout) })
	s.goRun("worker", func() error { return rig.RunWorker(sctx, context.Background(), w, d, cfg.ShutdownTimeout, nil) })
	s.goRun("task API", func() error { return rig.Serve(sctx, api, apiLn, cfg.ShutdownTimeout) })
	return s, nil
}

func (s *services) goRun(name string, fn func() error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := fn(); err != nil {
			s.mu.Lock()
			s.errs = append(s.errs, fmt.Errorf("%s: %w", name, err))
			s.mu.Unlock()
		}
	}()
}

// stop shuts every service down (each bounded by cfg.ShutdownTimeout) and closes the pools.
func (s *services) stop() error {
	s.cancel()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(append(s.errs, s.close())...)
}

// waitHealthy polls the services' /healthz until each answers 200 (bounded: 10 s).
func waitHealthy(ctx context.Context, urls ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, u := range urls {
		for {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s did not become healthy: %w", u, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}
