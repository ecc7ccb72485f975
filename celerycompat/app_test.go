package celerycompat_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// One entry point: an App from two URLs (broker on db 1, results on db 2) sends, runs, reads
// results and answers remote control (the broker DB comes from the URL), and closes once.
func TestAppFromURLs(t *testing.T) {
	r := celerytest.StartRedis(t)
	app, err := cc.New(cc.Config{BrokerURL: r.URL(1), ResultBackend: r.URL(2), PeerVersion: cc.Celery53})
	if err != nil {
		t.Fatal(err)
	}
	type addArgs struct {
		X int64 `json:"x"`
		Y int64 `json:"y"`
	}
	w, err := app.Worker(cc.WorkerConfig{Hostname: "app-test@host"})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Register("tasks.add", cc.Typed(func(ctx context.Context, req *cc.Request, a addArgs) (any, error) {
		return a.X + a.Y, nil
	}, "x", "y")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()

	res, err := app.Send(ctx, "tasks.add", []any{2, 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := res.Get(ctx)
	if err != nil || fmt.Sprint(v) != "5" {
		t.Fatalf("Get: %v %v, want 5", v, err)
	}
	if got, err := app.AsyncResult(res.ID).Get(ctx); err != nil || fmt.Sprint(got) != "5" {
		t.Fatalf("AsyncResult(id).Get: %v %v", got, err)
	}
	ctl, err := app.Control(cc.ControlConfig{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	replies, err := ctl.Ping(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := replies["app-test@host"]; !ok {
		t.Fatalf("ping replies %v: the worker on db 1 did not answer", replies)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	if err := app.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := app.Send(context.Background(), "tasks.add", nil, nil); err == nil {
		t.Fatal("Send after Close succeeded")
	}
}

func TestAppConfigErrors(t *testing.T) {
	for name, cfg := range map[string]cc.Config{
		"no broker":         {},
		"bad broker":        {BrokerURL: "amqp://guest@localhost//"},
		"bad backend":       {BrokerURL: "redis://localhost/0", ResultBackend: "db+sqlite:///r.db"},
		"negative limit":    {BrokerURL: "redis://localhost/0", PoolLimit: -1},
		"url and transport": {BrokerURL: "redis://localhost/0", Transport: &cc.Broker{}},
		"nil transport":     {Transport: (*cc.Broker)(nil)},
	} {
		if _, err := cc.New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		} else if name != "bad broker" && name != "bad backend" && !errors.Is(err, cc.ErrInvalidConfig) {
			t.Errorf("%s: %v, want ErrInvalidConfig", name, err)
		}
	}
}

// An App on a Transport the caller built (here a *Broker) uses it and leaves it open: Close does
// not close what the App did not open, so the broker's pool still serves afterwards.
func TestAppOnCallerTransport(t *testing.T) {
	r := celerytest.StartRedis(t)
	pool := r.Pool(1)
	broker, err := cc.NewBroker(pool, cc.BrokerConfig{DB: 1})
	if err != nil {
		t.Fatal(err)
	}
	app, err := cc.New(cc.Config{Transport: broker})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := app.Broker(); err != nil || got != broker {
		t.Fatalf("Broker() = %p, %v; want the caller's broker", got, err)
	}
	if app.Transport() != cc.Transport(broker) {
		t.Fatalf("Transport() = %T", app.Transport())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := app.Send(ctx, "tasks.add", []any{1, 2}, nil); err != nil {
		t.Fatal(err)
	}
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Send(ctx, "tasks.add", []any{1, 2}, nil); err != nil {
		t.Fatalf("Send after Close on the caller's transport: %v (the App closed what it did not open)", err)
	}
	if n, _ := r.Do(1, "LLEN", "celery").(int64); n != 2 {
		t.Fatalf("queue celery holds %d messages, want 2", n)
	}
}
