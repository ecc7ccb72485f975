package amqp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// TestNewApp is Celery(broker='amqp://…', backend='redis://…') in Go: an App from NewApp sends a
// task through real RabbitMQ to a worker it made, the result comes back through the Redis
// backend, and what needs Redis (remote control, the *Broker) says so with a typed error instead
// of a nil dereference. Close closes the AMQP connection too.
func TestNewApp(t *testing.T) {
	v := newVHost(t)
	rd := celerytest.StartRedis(t)
	ctx := testCtx(t)
	app, err := NewApp(ctx, celerycompat.Config{BrokerURL: v.URL(), ResultBackend: rd.URL(2)})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if app.Transport() != celerycompat.Transport(app.AMQP()) {
		t.Fatalf("Transport() is %T, want the app's *amqp.Transport", app.Transport())
	}
	if _, err := app.Broker(); !errors.Is(err, celerycompat.ErrUnsupportedTransport) {
		t.Fatalf("Broker() error %v, want ErrUnsupportedTransport", err)
	}
	ctl, err := app.Control(celerycompat.ControlConfig{})
	if err != nil {
		t.Fatalf("Control(): %v (the RabbitMQ mailbox carries remote control)", err)
	}

	w, err := app.Worker(celerycompat.WorkerConfig{Hostname: "app@amqp"})
	if err != nil {
		t.Fatal(err)
	}
	type addArgs struct{ X, Y int64 }
	if err := w.Register("tasks.add", celerycompat.Typed(func(_ context.Context, _ *celerycompat.Request, a addArgs) (any, error) {
		return a.X + a.Y, nil
	}, "X", "Y")); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	res, err := app.Send(ctx, "tasks.add", []any{2, 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := res.Get(ctx); err != nil || fmt.Sprint(got) != "5" {
		t.Fatalf("Get: %v %v, want 5", got, err)
	}
	if got, err := app.AsyncResult(res.ID).Get(ctx); err != nil || fmt.Sprint(got) != "5" {
		t.Fatalf("AsyncResult(id).Get: %v %v, want 5", got, err)
	}
	if replies, err := ctl.Ping(ctx, celerycompat.BroadcastTo("app@amqp")); err != nil || len(replies) != 1 {
		t.Fatalf("app.Control().Ping: %v %v, want the worker's pong", replies, err)
	}
	stop()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	// The message was acked: nothing ready, nothing held.
	waitQueues(t, v, func(qs map[string]celerytest.Queue) bool {
		return qs["celery"].Ready == 0 && qs["celery"].Unacked == 0
	})
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	if err := app.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := app.Send(sctx, "tasks.add", []any{1, 1}, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v, want ErrClosed (the connection NewApp opened is closed)", err)
	}
}

// NewApp refuses what is not an amqp broker, and a Transport it would not own, before dialing;
// a broker that is not there is an error at once (no lazy connection on AMQP).
func TestNewAppErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for name, c := range map[string]struct {
		cfg  celerycompat.Config
		want error
	}{
		"redis url":     {celerycompat.Config{BrokerURL: "redis://127.0.0.1:6379/0"}, celerycompat.ErrInvalidURL},
		"empty":         {celerycompat.Config{}, celerycompat.ErrInvalidURL},
		"no listener":   {celerycompat.Config{BrokerURL: "amqp://guest:secret@127.0.0.1:1/"}, celerycompat.ErrBroker},
		"own transport": {celerycompat.Config{BrokerURL: "amqp://127.0.0.1:1/", Transport: &Transport{}}, celerycompat.ErrInvalidConfig},
	} {
		t.Run(name, func(t *testing.T) {
			app, err := NewApp(ctx, c.cfg)
			if !errors.Is(err, c.want) {
				t.Fatalf("NewApp: %v, want %v", err, c.want)
			}
			if app != nil {
				t.Fatal("NewApp returned an App with its error")
			}
			if strings.Contains(fmt.Sprint(err), "secret") {
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
}

// A result backend URL celerycompat.New refuses closes the connection NewApp opened.
func TestNewAppBadBackendClosesConnection(t *testing.T) {
	v := newVHost(t)
	_, err := NewApp(testCtx(t), celerycompat.Config{BrokerURL: v.URL(), ResultBackend: "mongodb://x"})
	if !errors.Is(err, celerycompat.ErrInvalidURL) {
		t.Fatalf("NewApp: %v, want ErrInvalidURL", err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if len(v.List(t, "list_connections", "name")) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the AMQP connection NewApp opened is still open")
		}
	}
}
