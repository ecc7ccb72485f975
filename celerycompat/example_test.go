package celerycompat_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sort"
	"time"

	"github.com/alicebob/miniredis/v2"

	cc "github.com/celerybridge/celerybridge/celerycompat"
)

// embeddedRedis starts an in-process Redis for the examples (in production: your Redis URL).
func embeddedRedis() (url string, stop func()) {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		log.Fatal(err)
	}
	return "redis://" + m.Addr() + "/0", m.Close
}

// runWorkerBackground runs w until the returned stop is called.
func runWorkerBackground(w *cc.Worker) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			log.Fatal(err)
		}
	}
}

type addArgs struct {
	X int64 `json:"x"`
	Y int64 `json:"y"`
}

func add(ctx context.Context, req *cc.Request, a addArgs) (any, error) { return a.X + a.Y, nil }

// Send a task and wait for its result, as app.send_task(...).get() does in Python. The worker
// here is Go; it could as well be a Python Celery worker on the same Redis.
func Example() {
	url, stopRedis := embeddedRedis()
	defer stopRedis()
	ctx := context.Background()

	app, err := cc.New(cc.Config{BrokerURL: url, ResultBackend: url})
	if err != nil {
		log.Fatal(err)
	}
	defer app.Close()

	w, _ := app.Worker(cc.WorkerConfig{})
	_ = w.Register("tasks.add", cc.Typed(add, "x", "y"))
	defer runWorkerBackground(w)()

	res, err := app.Send(ctx, "tasks.add", []any{2, 3}, nil, cc.WithCountdown(10*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	v, err := res.Get(ctx) // woken by the backend's PUBLISH, no polling
	fmt.Println(v, err)
	// Output: 5 <nil>
}

// A worker with Typed handlers: the struct declares the Python signature. Fields are
// required unless tagged omitempty; a missing one is the TypeError Python would raise.
func ExampleTyped() {
	url, stopRedis := embeddedRedis()
	defer stopRedis()
	ctx := context.Background()
	app, _ := cc.New(cc.Config{BrokerURL: url, ResultBackend: url})
	defer app.Close()

	// def process_task(task_id, data, priority="normal")
	type processArgs struct {
		TaskID   string         `json:"task_id"`
		Data     map[string]any `json:"data"`
		Priority string         `json:"priority,omitempty"`
	}
	process := func(ctx context.Context, req *cc.Request, a processArgs) (any, error) {
		n := a.Data["n"].(int64) // Python ints arrive as int64 (or *big.Int when larger)
		return map[string]any{"task_id": a.TaskID, "double": 2 * n}, nil
	}
	w, _ := app.Worker(cc.WorkerConfig{})
	if err := w.Register("tasks.process_task", cc.Typed(process, "task_id", "data")); err != nil {
		log.Fatal(err)
	}
	defer runWorkerBackground(w)()

	res, _ := app.Send(ctx, "tasks.process_task", []any{"biz-1"}, map[string]any{"data": map[string]any{"n": 21}})
	v, err := res.Get(ctx)
	fmt.Println(v, err)

	res, _ = app.Send(ctx, "tasks.process_task", []any{"biz-2"}, nil)
	_, err = res.Get(ctx)
	var te *cc.TaskError
	if errors.As(err, &te) {
		fmt.Println(te.ExcType+":", te.Message())
	}
	// Output:
	// map[double:42 task_id:biz-1] <nil>
	// TypeError: tasks.process_task: arguments do not match: process_task() missing 1 required positional argument: 'data'
}

// Hooks are Celery's signals. A plain hook's error is logged and changes nothing; BeforeAck
// makes the message's acknowledgement wait for the hook (a callback outbox, an audit row).
func ExampleHooks() {
	url, stopRedis := embeddedRedis()
	defer stopRedis()
	ctx := context.Background()
	app, _ := cc.New(cc.Config{BrokerURL: url, ResultBackend: url})
	defer app.Close()

	w, _ := app.Worker(cc.WorkerConfig{})
	_ = w.Register("tasks.add", cc.Typed(add, "x", "y"))
	done := make(chan string, 1)
	w.Hooks().OnTaskPrerun(func(ctx context.Context, e *cc.TaskPrerun) error {
		fmt.Println("prerun", e.Task, e.Args)
		return nil
	})
	w.Hooks().OnTaskSuccess(cc.BeforeAck(func(ctx context.Context, e *cc.TaskSuccess) error {
		done <- fmt.Sprintf("success %s %v", e.Task, e.Result) // e.g. enqueue a callback
		return nil
	}), "tasks.add")
	defer runWorkerBackground(w)()

	_, _ = app.Send(ctx, "tasks.add", []any{1, 2}, nil)
	fmt.Println(<-done)
	// Output:
	// prerun tasks.add [1 2]
	// success tasks.add 3
}

// A handler asks for a retry by returning Retry(err, ...), as self.retry(exc=err, countdown=…).
func ExampleRetry() {
	url, stopRedis := embeddedRedis()
	defer stopRedis()
	ctx := context.Background()
	app, _ := cc.New(cc.Config{BrokerURL: url, ResultBackend: url})
	defer app.Close()

	w, _ := app.Worker(cc.WorkerConfig{})
	_ = w.Register("tasks.flaky", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		if req.Retries < 2 {
			return nil, cc.Retry(cc.NewTaskError("ConnectionError", "upstream down"), cc.RetryIn(10*time.Millisecond))
		}
		return fmt.Sprintf("ok after %d retries", req.Retries), nil
	}), cc.TaskMaxRetries(3))
	defer runWorkerBackground(w)()

	res, _ := app.Send(ctx, "tasks.flaky", nil, nil)
	fmt.Println(res.Get(ctx))
	// Output: ok after 2 retries <nil>
}

// Chains, groups and chords, as Celery's canvas sends them: a Python worker runs them the same.
func ExampleProducer_SendChord() {
	url, stopRedis := embeddedRedis()
	defer stopRedis()
	ctx := context.Background()
	app, _ := cc.New(cc.Config{BrokerURL: url, ResultBackend: url})
	defer app.Close()

	w, _ := app.Worker(cc.WorkerConfig{Concurrency: 4})
	_ = w.Register("tasks.add", cc.Typed(add, "x", "y"))
	_ = w.Register("tasks.tsum", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		var sum int64
		for _, v := range req.Args[0].([]any) {
			var n int64
			fmt.Sscan(fmt.Sprint(v), &n)
			sum += n
		}
		return sum, nil
	}))
	defer runWorkerBackground(w)()
	p, _ := app.Producer(cc.ProducerConfig{})

	// chain(add.s(1, 2), add.s(10), add.s(100))
	last, _ := p.SendChain(ctx, []cc.Signature{
		cc.NewSignature("tasks.add", []any{1, 2}, nil),
		cc.NewSignature("tasks.add", []any{10}, nil),
		cc.NewSignature("tasks.add", []any{100}, nil),
	})
	fmt.Println(last.Get(ctx))

	// group(add.s(i, i) for i in range(3))
	header := []cc.Signature{
		cc.NewSignature("tasks.add", []any{0, 0}, nil),
		cc.NewSignature("tasks.add", []any{1, 1}, nil),
		cc.NewSignature("tasks.add", []any{2, 2}, nil),
	}
	_, results, _ := p.SendGroup(ctx, header)
	var got []string
	for _, r := range results {
		v, _ := r.Get(ctx)
		got = append(got, fmt.Sprint(v))
	}
	sort.Strings(got)
	fmt.Println(got)

	// chord(group)(tsum.s())
	body, _ := p.SendChord(ctx, header, cc.NewSignature("tasks.tsum", nil, nil))
	fmt.Println(body.Get(ctx))
	// Output:
	// 113 <nil>
	// [0 2 4]
	// 6 <nil>
}

// Remote control, as app.control and `celery inspect` use it: it reaches Python and Go workers.
func ExampleControl() {
	url, stopRedis := embeddedRedis()
	defer stopRedis()
	ctx := context.Background()
	app, _ := cc.New(cc.Config{BrokerURL: url})
	defer app.Close()

	w, _ := app.Worker(cc.WorkerConfig{Hostname: "go1@example"})
	_ = w.Register("tasks.add", cc.Typed(add, "x", "y"))
	defer runWorkerBackground(w)()

	ctl, _ := app.Control(cc.ControlConfig{Timeout: 200 * time.Millisecond})
	var replies cc.Replies
	var err error
	for range 10 { // the worker may still be joining the mailbox
		if replies, err = ctl.Ping(ctx); len(replies) > 0 {
			break
		}
	}
	fmt.Println(replies.Nodes(), err)
	replies, _ = ctl.Inspect(ctx, "registered")
	fmt.Println(string(replies["go1@example"]))
	// Output:
	// [go1@example] <nil>
	// ["tasks.add"]
}
