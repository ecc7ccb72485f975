package gocelery_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/celerybridge/celerybridge/gocelery"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// amqpConn is a connection and channel the test owns, as a program building its own would.
func amqpConn(t *testing.T, v *celerytest.VHost) (*amqp.Connection, *amqp.Channel) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, ch, err := gocelery.NewAMQPConnectionContext(ctx, v.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, ch
}

// TestAMQPBackendGoToGo: a Go client and a Go worker on RabbitMQ alone, results in the AMQP
// backend (a queue per task, as gocelery stored them), with the broker and backend built on
// the program's own connections. Get, Ready and AsyncGet all read the result, which stays in
// its queue; a failure is an error; an unknown id is ErrResultNotAvailable.
func TestAMQPBackendGoToGo(t *testing.T) {
	v := amqpVHost(t)
	broker := gocelery.NewAMQPCeleryBrokerByConnAndChannel(amqpConn(t, v))
	t.Cleanup(func() { broker.CloseEngine() })
	// amqp091-go does not keep the credentials of an open connection: the engine asks for URL.
	if err := broker.SendCeleryMessage(gocelery.NewCeleryMessage(mustEncode(t, "worker.add"))); !errors.Is(err, gocelery.ErrConfig) || !strings.Contains(err.Error(), "URL") {
		t.Errorf("broker on a connection without URL: %v, want ErrConfig asking for URL", err)
	}
	broker.URL = v.URL()
	backend := gocelery.NewAMQPCeleryBackendByConnAndChannel(amqpConn(t, v))
	cli, err := gocelery.NewCeleryClient(broker, backend, 2)
	if err != nil {
		t.Fatal(err)
	}
	cli.Register("worker.add", func(a, b int) int { return a + b })
	cli.Register("worker.add_reflect", &addTask{})
	cli.Register("worker.fail", func() (int, error) { return 0, errors.New("boom") })
	cli.StartWorker()
	defer cli.StopWorker()

	ar, err := cli.Delay("worker.add", 5456, 2878)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := ar.Get(20 * time.Second); err != nil || res != float64(8334) {
		t.Fatalf("Get = %v (%T), %v; want 8334", res, res, err)
	}
	if ok, err := ar.Ready(); !ok || err != nil {
		t.Errorf("Ready after Get = %v, %v", ok, err)
	}
	if res, err := ar.AsyncGet(); err != nil || res != float64(8334) {
		t.Errorf("AsyncGet after Get = %v, %v", res, err)
	}
	q := strings.ReplaceAll(ar.TaskID, "-", "")
	var found bool
	for _, row := range v.List(t, "list_queues", "name", "messages", "durable", "auto_delete", "arguments") {
		if row["name"] == q {
			found = true
			if row["messages"] != float64(1) || row["durable"] != true || row["auto_delete"] != true {
				t.Errorf("result queue %v: want 1 message, durable, auto-delete", row)
			}
		}
	}
	if !found {
		t.Errorf("no result queue %s", q)
	}

	ar, err = cli.DelayKwargs("worker.add_reflect", map[string]interface{}{"a": 2, "b": 3})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := ar.Get(20 * time.Second); err != nil || res != float64(5) {
		t.Errorf("DelayKwargs: Get = %v, %v; want 5", res, err)
	}
	if ar, err = cli.Delay("worker.fail"); err != nil {
		t.Fatal(err)
	}
	if _, err := ar.Get(20 * time.Second); !errors.Is(err, gocelery.ErrTaskFailed) || !strings.Contains(err.Error(), "boom") {
		t.Errorf("worker.fail: Get error %v, want ErrTaskFailed with boom", err)
	}
	rm, err := backend.GetResult(ar.TaskID)
	if err != nil || rm.Status != "FAILURE" || rm.ID != ar.TaskID {
		t.Errorf("GetResult of the failure = %+v, %v", rm, err)
	}
	if _, err := backend.GetResult("no-such-task"); !errors.Is(err, gocelery.ErrResultNotAvailable) {
		t.Errorf("GetResult of an unknown id: %v, want ErrResultNotAvailable", err)
	}
	if _, err := (&gocelery.AsyncResult{}).Get(time.Millisecond); !errors.Is(err, gocelery.ErrConfig) {
		t.Errorf("literal AsyncResult: %v", err)
	}
}

func mustEncode(t *testing.T, task string, args ...interface{}) string {
	t.Helper()
	if args == nil {
		args = []interface{}{}
	}
	body, err := (&gocelery.TaskMessage{ID: "id-" + task, Task: task, Args: args, Kwargs: map[string]interface{}{}}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// TestAMQPBackendNotAResult: a message in a result queue that is not a result is an error
// wrapping ErrUnsupportedMessage and stays where it is.
func TestAMQPBackendNotAResult(t *testing.T) {
	v := amqpVHost(t)
	backend := gocelery.NewAMQPCeleryBackend(v.URL())
	t.Cleanup(func() { backend.Connection.Close() })
	if err := backend.SetResult("abc-1", &gocelery.ResultMessage{Result: 1}); err != nil {
		t.Fatal(err)
	}
	if rm, err := backend.GetResult("abc-1"); err != nil || rm.Status != "SUCCESS" || rm.ID != "abc-1" {
		t.Fatalf("GetResult = %+v, %v", rm, err)
	}
	_, ch := amqpConn(t, v)
	if _, err := ch.QueueDeclare("abcx", true, true, false, false, amqp.Table{"x-expires": int32(86400000)}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish("", "abcx", false, false, amqp.Publishing{Body: []byte("garbage")}); err != nil {
		t.Fatal(err)
	}
	waitQueues(t, v, func(qs map[string]celerytest.Queue) bool { return qs["abcx"].Ready == 1 })
	if _, err := backend.GetResult("abc-x"); !errors.Is(err, gocelery.ErrUnsupportedMessage) {
		t.Errorf("GetResult of garbage: %v, want ErrUnsupportedMessage", err)
	}
	waitQueues(t, v, func(qs map[string]celerytest.Queue) bool { return qs["abcx"].Ready == 1 })

	bad := gocelery.NewAMQPCeleryBackend("amqp://guest:guest@127.0.0.1:1/")
	if err := bad.SetResult("x", &gocelery.ResultMessage{}); err == nil {
		t.Error("SetResult on an unreachable broker: no error")
	}
}

// TestAMQPBadMessagesDeadLettered: with the worker running, an undecodable message and a task
// nobody registered go to the dead-letter queue with a reason instead of being dropped, and
// the worker keeps serving.
func TestAMQPBadMessagesDeadLettered(t *testing.T) {
	v := amqpVHost(t)
	broker := gocelery.NewAMQPCeleryBroker(v.URL())
	t.Cleanup(func() { broker.CloseEngine(); broker.Connection.Close() })
	backend := gocelery.NewAMQPCeleryBackend(v.URL())
	t.Cleanup(func() { backend.Connection.Close() })
	cli, err := gocelery.NewCeleryClient(broker, backend, 1)
	if err != nil {
		t.Fatal(err)
	}
	cli.Register("worker.add", func(a, b int) int { return a + b })
	cli.StartWorker()
	defer cli.StopWorker()

	rawPublish(t, v, "celery", amqp.Publishing{ContentType: "application/json",
		Headers: amqp.Table{"task": "worker.add", "id": "poison-1"}, Body: []byte("{not json")})
	if _, err := cli.Delay("worker.nobody", 1); err != nil {
		t.Fatal(err)
	}
	ar, err := cli.Delay("worker.add", 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := ar.Get(20 * time.Second); err != nil || res != float64(3) {
		t.Fatalf("Get after the bad messages = %v, %v", res, err)
	}
	waitQueues(t, v, func(qs map[string]celerytest.Queue) bool {
		return qs["celery"].Ready+qs["celery"].Unacked == 0 && qs["celerybridge.deadletter"].Ready == 2
	})
	_, ch := amqpConn(t, v)
	reasons := map[string]string{}
	for range 2 {
		d, ok, err := ch.Get("celerybridge.deadletter", true)
		if err != nil || !ok {
			t.Fatalf("basic.get dead letter: %v %v", ok, err)
		}
		id, _ := d.Headers["id"].(string)
		reason, _ := d.Headers["x-deadletter-reason"].(string)
		reasons[id] = reason
	}
	if reasons["poison-1"] == "" || len(reasons) != 2 {
		t.Errorf("dead letters (id → reason) %v: want poison-1 and the unregistered task, each with a reason", reasons)
	}
}

// TestAMQPGetTaskMessage: gocelery's polling path. A task sent by SendCeleryMessage (protocol
// 1, as gocelery wrote it) comes back with its arguments, an empty queue is (nil, nil), and an
// undecodable message is dead-lettered and reported.
func TestAMQPGetTaskMessage(t *testing.T) {
	v := amqpVHost(t)
	broker := gocelery.NewAMQPCeleryBroker(v.URL())
	t.Cleanup(func() { broker.CloseEngine(); broker.Connection.Close() })
	tm := &gocelery.TaskMessage{ID: "t-1", Task: "worker.add", Args: []interface{}{1, 2}, Kwargs: map[string]interface{}{}}
	body, err := tm.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := broker.SendCeleryMessage(gocelery.NewCeleryMessage(body)); err != nil {
		t.Fatal(err)
	}
	if err := broker.StartConsumingChannel(); err != nil {
		t.Fatal(err)
	}
	var got *gocelery.TaskMessage
	for deadline := time.Now().Add(10 * time.Second); got == nil && time.Now().Before(deadline); {
		if got, err = broker.GetTaskMessage(); err != nil {
			t.Fatal(err)
		}
	}
	if got == nil || got.ID != "t-1" || got.Task != "worker.add" || len(got.Args) != 2 || got.Args[1] != float64(2) {
		t.Fatalf("GetTaskMessage = %+v", got)
	}
	if m, err := broker.GetTaskMessage(); m != nil || err != nil {
		t.Errorf("empty queue: GetTaskMessage = %+v, %v; want nil, nil", m, err)
	}
	rawPublish(t, v, "celery", amqp.Publishing{ContentType: "application/json", Body: []byte("[1,")})
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if _, err = broker.GetTaskMessage(); err != nil {
			break
		}
	}
	if !errors.Is(err, gocelery.ErrUnsupportedMessage) {
		t.Errorf("undecodable message: %v, want ErrUnsupportedMessage", err)
	}
	waitQueues(t, v, func(qs map[string]celerytest.Queue) bool {
		return qs["celerybridge.deadletter"].Ready == 1 && qs["celery"].Ready+qs["celery"].Unacked == 0
	})
}

// TestAMQPBrokerConfig: flags that Celery's declarations would refuse are reported as
// ErrConfig before anything reaches the broker, and a broker that could not connect says so.
func TestAMQPBrokerConfig(t *testing.T) {
	v := amqpVHost(t)
	backend := gocelery.NewAMQPCeleryBackend(v.URL())
	t.Cleanup(func() { backend.Connection.Close() })
	for name, mod := range map[string]func(*gocelery.AMQPCeleryBroker){
		"auto-delete exchange (gocelery's)": func(b *gocelery.AMQPCeleryBroker) { b.Exchange.AutoDelete = true },
		"transient queue":                   func(b *gocelery.AMQPCeleryBroker) { b.Queue.Durable = false },
	} {
		t.Run(name, func(t *testing.T) {
			b := gocelery.NewAMQPCeleryBroker(v.URL())
			t.Cleanup(func() { b.CloseEngine(); b.Connection.Close() })
			mod(b)
			cli, err := gocelery.NewCeleryClient(b, backend, 1)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cli.Delay("worker.add", 1, 2); !errors.Is(err, gocelery.ErrConfig) {
				t.Errorf("Delay: %v, want ErrConfig", err)
			}
		})
	}
	conn, ch := gocelery.NewAMQPConnection("amqp://guest:guest@127.0.0.1:1/")
	if conn != nil || ch != nil {
		t.Error("NewAMQPConnection to a closed port returned a connection")
	}
	b := gocelery.NewAMQPCeleryBroker("amqp://guest:guest@127.0.0.1:1/")
	cli, err := gocelery.NewCeleryClient(b, backend, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delay("worker.add", 1, 2); err == nil {
		t.Error("Delay on an unreachable broker: no error")
	}
}

// TestAMQPETAOnIdleQueue: a task with an ETA, alone on an otherwise idle queue, runs when due
// (it never did while the worker's fetch loop waited on RabbitMQ holding every slot).
func TestAMQPETAOnIdleQueue(t *testing.T) {
	for _, n := range []int{1, 2} {
		t.Run(fmt.Sprint("numWorkers=", n), func(t *testing.T) {
			v := amqpVHost(t)
			broker := gocelery.NewAMQPCeleryBroker(v.URL())
			t.Cleanup(func() { broker.CloseEngine(); broker.Connection.Close() })
			backend := gocelery.NewAMQPCeleryBackend(v.URL())
			t.Cleanup(func() { backend.Connection.Close() })
			cli, err := gocelery.NewCeleryClient(broker, backend, n)
			if err != nil {
				t.Fatal(err)
			}
			cli.Register("worker.add", func(a, b int) int { return a + b })
			cli.StartWorker()
			defer cli.StopWorker()
			eta := time.Now().UTC().Add(time.Second).Format("2006-01-02T15:04:05.000000")
			tm := &gocelery.TaskMessage{ID: fmt.Sprint("eta-", n), Task: "worker.add", Args: []interface{}{1, 2},
				Kwargs: map[string]interface{}{}, ETA: &eta}
			body, err := tm.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if err := broker.SendCeleryMessage(gocelery.NewCeleryMessage(body)); err != nil {
				t.Fatal(err)
			}
			var rm *gocelery.ResultMessage
			for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				if rm, err = backend.GetResult(tm.ID); err == nil {
					break
				}
			}
			if rm == nil || rm.Result != 3.0 {
				t.Fatalf("ETA task: result %+v, %v; want 3", rm, err)
			}
		})
	}
}
