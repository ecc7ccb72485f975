package rig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/gomodule/redigo/redis"
	"github.com/labstack/echo/v4"
)

// The original's messages, restored where the document lost characters.
const (
	MsgSubmitted    = "任务已提交至队列"    // POST /submit-task: task submitted to the queue
	MsgSubmitFailed = "任务提交失败："     // followed by the cause
	MsgNotFound     = "任务不存在或已完成清理" // GET /task-status: unknown or cleaned up
	MsgTaskDone     = "任务执行完成"      // tasks.process_task's result message
)

// poolSize bounds the connections of each pool OpenDeps makes; callers beyond it wait.
const poolSize = 64

// Deps are the resources a service uses but does not own.
type Deps struct {
	// Broker reaches Config.RedisURL: queues, the callback outbox. Required. The caller owns it
	// (a *redis.Pool from celerycompat.RedisURL.NewPool does).
	Broker celerycompat.Pool
	// Results reaches the result backend (Config.ResultsURL) and holds the API's id mapping. nil
	// means Broker.
	Results celerycompat.Pool
	// Logger receives the services' logs; nil is silent.
	Logger *slog.Logger
	// Sleep is how the worker's task waits TaskSleep; it must return ctx's error when ctx ends
	// first. nil is a timer that does so. Tests inject a gate here.
	Sleep func(ctx context.Context, d time.Duration) error
}

func (d Deps) results() celerycompat.Pool {
	if d.Results != nil {
		return d.Results
	}
	return d.Broker
}

func (d Deps) logger() *slog.Logger {
	if d.Logger != nil {
		return d.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (d Deps) check() error {
	if d.Broker == nil {
		return errors.New("rig: Deps.Broker is nil")
	}
	return nil
}

// OpenDeps opens the pools cfg names: one for the broker and, when the result backend is another
// URL, one for it. It does not dial; the services start while Redis is down and answer 503 until
// it is back. close closes what OpenDeps opened.
func OpenDeps(cfg Config, logger *slog.Logger) (d Deps, close func() error, err error) {
	bu, err := celerycompat.ParseRedisURL(cfg.RedisURL)
	if err != nil {
		return Deps{}, nil, fmt.Errorf("rig: broker url: %w", err)
	}
	bu.MasterName = cfg.MasterName
	broker := bu.NewPool(poolSize)
	d = Deps{Broker: broker, Logger: logger}
	if cfg.ResultsURL() == cfg.RedisURL && cfg.resultMasterName() == cfg.MasterName {
		return d, broker.Close, nil
	}
	ru, err := celerycompat.ParseRedisURL(cfg.ResultsURL())
	if err != nil {
		broker.Close()
		return Deps{}, nil, fmt.Errorf("rig: result url: %w", err)
	}
	ru.MasterName = cfg.resultMasterName()
	results := ru.NewPool(poolSize)
	d.Results = results
	return d, func() error { return errors.Join(broker.Close(), results.Close()) }, nil
}

// brokerDB is the database number of the broker URL (Celery names its fanout channels after it).
func brokerDB(cfg Config) (int, error) {
	u, err := celerycompat.ParseRedisURL(cfg.RedisURL)
	if err != nil {
		return 0, fmt.Errorf("rig: broker url: %w", err)
	}
	return u.DB, nil
}

// ping checks one pool.
func ping(ctx context.Context, p celerycompat.Pool) error {
	c, err := p.GetContext(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = redis.DoContext(c, ctx, "PING")
	return err
}

// Serve serves e on ln until ctx ends, then shuts it down gracefully, waiting up to grace for the
// requests in flight. It returns nil after a clean shutdown, the server's error if it failed, or
// the shutdown's error (context.DeadlineExceeded when requests outlived grace). ln is closed.
func Serve(ctx context.Context, e *echo.Echo, ln net.Listener, grace time.Duration) error {
	e.HideBanner, e.HidePort = true, true
	e.Listener = ln
	errc := make(chan error, 1)
	go func() { errc <- e.Start("") }()
	select {
	case err := <-errc:
		return fmt.Errorf("rig: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	serr := e.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("rig: serve %s: %w", ln.Addr(), err)
	}
	if serr != nil {
		return fmt.Errorf("rig: shutdown %s: %w", ln.Addr(), serr)
	}
	return nil
}

// RunWorker runs w and d until ctx ends, then drains in order: the worker first (it finishes its
// running tasks, whose callbacks land in the outbox), then the dispatcher (it delivers what it can
// within grace; the rest stays in the outbox for the next run). It returns the first error.
func RunWorker(ctx context.Context, w *celerycompat.Worker, d *callback.Dispatcher, grace time.Duration) error {
	dctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	derr := make(chan error, 1)
	go func() { derr <- d.Run(dctx) }()
	werr := w.Run(ctx)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	serr := d.Shutdown(sctx)
	if errors.Is(serr, callback.ErrDispatcherClosed) {
		serr = nil // Run had already returned
	}
	stop()
	rerr := <-derr
	if werr != nil {
		return fmt.Errorf("rig: worker: %w", werr)
	}
	if serr != nil {
		return fmt.Errorf("rig: dispatcher shutdown: %w", serr)
	}
	if rerr != nil && !errors.Is(rerr, callback.ErrDispatcherClosed) {
		return fmt.Errorf("rig: dispatcher: %w", rerr)
	}
	return nil
}
