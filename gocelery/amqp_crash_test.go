package gocelery_test

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/gocelery"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

const amqpCrashChildEnv = "GOCELERY_AMQP_CRASH_CHILD_URL"

// TestAMQPCrashedWorkerTaskIsRedelivered: a worker process killed (SIGKILL) while running a
// task on RabbitMQ does not lose it, where gocelery acknowledged each message as it took it:
// the engine acknowledges only after the result is stored, so the broker takes the message
// back when the connection dies and the next worker runs it.
func TestAMQPCrashedWorkerTaskIsRedelivered(t *testing.T) {
	if url := os.Getenv(amqpCrashChildEnv); url != "" {
		amqpCrashChild(url)
		return
	}
	v := amqpVHost(t)
	broker := gocelery.NewAMQPCeleryBroker(v.URL())
	t.Cleanup(func() { broker.CloseEngine(); broker.Connection.Close() })
	backend := gocelery.NewAMQPCeleryBackend(v.URL())
	t.Cleanup(func() { backend.Connection.Close() })
	cli, err := gocelery.NewCeleryClient(broker, backend, 1)
	if err != nil {
		t.Fatal(err)
	}
	ar, err := cli.Delay("worker.add", 2, 3)
	if err != nil {
		t.Fatal(err)
	}

	child := exec.Command(os.Args[0], "-test.run=^TestAMQPCrashedWorkerTaskIsRedelivered$")
	child.Env = append(os.Environ(), amqpCrashChildEnv+"="+v.URL())
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for { // the child stores a marker result once the task has started
		if _, err := backend.GetResult("child-running"); err == nil {
			break
		} else if !errors.Is(err, gocelery.ErrResultNotAvailable) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the child worker never started the task")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if q := v.Queues(t)["celery"]; q.Unacked != 1 {
		t.Fatalf("while the child runs the task: queue %+v, want it un-acked", q)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	waitQueues(t, v, func(qs map[string]celerytest.Queue) bool { return qs["celery"].Ready == 1 })

	cli.Register("worker.add", func(a, b int) int { return a + b })
	cli.StartWorker()
	defer cli.StopWorker()
	if res, err := ar.Get(30 * time.Second); err != nil || res != 5.0 {
		t.Fatalf("redelivered task: Get = %v, %v; want 5", res, err)
	}
}

// amqpCrashChild runs a worker whose task blocks until the process is killed.
func amqpCrashChild(url string) {
	backend := gocelery.NewAMQPCeleryBackend(url)
	cli, err := gocelery.NewCeleryClient(gocelery.NewAMQPCeleryBroker(url), backend, 1)
	if err != nil {
		os.Exit(2)
	}
	cli.Register("worker.add", func(a, b int) int {
		if err := backend.SetResult("child-running", &gocelery.ResultMessage{Result: true}); err != nil {
			os.Exit(3)
		}
		select {} // until SIGKILL
	})
	cli.StartWorker()
	select {}
}

// TestAMQPResultStoreFailureRunsTaskAgain: while the result backend cannot store, a task the
// worker ran is not acknowledged without its result (it was, silently, before): it runs again
// until its result is stored.
func TestAMQPResultStoreFailureRunsTaskAgain(t *testing.T) {
	v := amqpVHost(t)
	broker := gocelery.NewAMQPCeleryBroker(v.URL())
	t.Cleanup(func() { broker.CloseEngine(); broker.Connection.Close() })
	backend := gocelery.NewAMQPCeleryBackend(v.URL())
	t.Cleanup(func() { backend.Connection.Close() })
	backend.Connection.Close() // every SetResult fails until Reconnect
	cli, err := gocelery.NewCeleryClient(broker, backend, 1)
	if err != nil {
		t.Fatal(err)
	}
	runs := make(chan struct{}, 100)
	cli.Register("worker.add", func(a, b int) int { runs <- struct{}{}; return a + b })
	cli.StartWorker()
	defer cli.StopWorker()
	ar, err := cli.Delay("worker.add", 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // ran, could not store, ran again
		select {
		case <-runs:
		case <-time.After(20 * time.Second):
			t.Fatal("the task did not run again after its result could not be stored")
		}
	}
	backend.Reconnect()
	if res, err := ar.Get(30 * time.Second); err != nil || res != 5.0 {
		t.Fatalf("after the backend is back: Get = %v, %v; want 5", res, err)
	}
}
