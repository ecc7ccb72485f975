package amqp_test

import (
	"context"
	"fmt"
	"log"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/celerycompat/amqp"
)

// Celery(broker='amqp://guest@localhost//', backend='redis://localhost:6379/0') in Go: a worker
// and a task on RabbitMQ, the result in Redis.
func ExampleNewApp() {
	ctx := context.Background()
	app, err := amqp.NewApp(ctx, celerycompat.Config{
		BrokerURL:     "amqp://guest:guest@127.0.0.1:5672//",
		ResultBackend: "redis://127.0.0.1:6379/0",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer app.Close()

	w, err := app.Worker(celerycompat.WorkerConfig{Concurrency: 4})
	if err != nil {
		log.Fatal(err)
	}
	type addArgs struct{ X, Y int }
	err = w.Register("tasks.add", celerycompat.Typed(func(ctx context.Context, req *celerycompat.Request, a addArgs) (any, error) {
		return a.X + a.Y, nil
	}, "x", "y"))
	if err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go w.Run(runCtx)

	res, err := app.Send(ctx, "tasks.add", []any{2, 3}, nil)
	if err != nil {
		log.Fatal(err)
	}
	sum, err := res.Get(ctx)
	fmt.Println(sum, err)
}

// A Transport built with options (here Celery's task_queue_max_priority), handed to
// celerycompat.New: the App uses it, the caller closes it after the App.
func ExampleNew_app() {
	ctx := context.Background()
	tr, err := amqp.New(ctx, amqp.Config{URL: "amqp://guest:guest@127.0.0.1:5672//", QueueMaxPriority: 10})
	if err != nil {
		log.Fatal(err)
	}
	defer tr.Close()
	app, err := celerycompat.New(celerycompat.Config{Transport: tr, ResultBackend: "redis://127.0.0.1:6379/0"})
	if err != nil {
		log.Fatal(err)
	}
	defer app.Close()
	_, err = app.Send(ctx, "tasks.add", []any{2, 3}, nil, celerycompat.WithPriority(9))
	fmt.Println(err)
}

// Celery(broker='amqp://…', backend='rpc://') in Go: the result of a task comes back as a
// message on the app's reply queue, whichever worker (Go or Python) ran it. Python's
// `AsyncResult.get()` on such an app reads what a Go worker on it stores the same way.
func ExampleNewApp_rpc() {
	ctx := context.Background()
	app, err := amqp.NewApp(ctx, celerycompat.Config{
		BrokerURL:     "amqp://guest:guest@127.0.0.1:5672//",
		ResultBackend: "rpc://",
		PeerVersion:   celerycompat.Celery55, // the oldest Python Celery in the deployment
	})
	if err != nil {
		log.Fatal(err)
	}
	defer app.Close()
	res, err := app.Send(ctx, "tasks.add", []any{2, 3}, nil)
	if err != nil {
		log.Fatal(err)
	}
	sum, err := res.Get(ctx)
	fmt.Println(sum, err)
}
