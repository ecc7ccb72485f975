package gocelery_test

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/celerybridge/celerybridge/gocelery"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

const crashChildEnv = "GOCELERY_CRASH_CHILD_REDIS"

// TestCrashedWorkerTaskIsRestored: a worker process killed (SIGKILL) while running a task does
// not lose it, where gocelery's BRPOP had already removed it from Redis: the message stays in
// kombu's unacked records, and once the visibility timeout passes the next worker's restore
// sweep puts it back and runs it.
func TestCrashedWorkerTaskIsRestored(t *testing.T) {
	if url := os.Getenv(crashChildEnv); url != "" {
		crashChild(url)
		return
	}
	r := celerytest.StartRedis(t)
	pool := r.Pool(0)
	backend := gocelery.NewRedisBackend(pool)
	t.Cleanup(func() { backend.Close() })
	broker := gocelery.NewRedisBroker(pool)
	broker.VisibilityTimeout = time.Second
	cli, err := gocelery.NewCeleryClient(broker, backend, 1)
	if err != nil {
		t.Fatal(err)
	}
	ar, err := cli.Delay("worker.add", 2, 3)
	if err != nil {
		t.Fatal(err)
	}

	child := exec.Command(os.Args[0], "-test.run=^TestCrashedWorkerTaskIsRestored$")
	child.Env = append(os.Environ(), crashChildEnv+"="+r.URL(0))
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for { // the child records that the task started
		if n, _ := redis.Int(r.Do(0, "EXISTS", "child:running"), nil); n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the child worker never started the task")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	if n, _ := redis.Int(r.Do(0, "HLEN", "unacked"), nil); n != 1 {
		t.Fatalf("after the crash: %d unacked records, want the task's 1", n)
	}
	time.Sleep(1500 * time.Millisecond) // past the visibility timeout

	cli.Register("worker.add", func(a, b int) int { return a + b })
	cli.StartWorker()
	defer cli.StopWorker()
	if v, err := ar.Get(30 * time.Second); err != nil || v != 5.0 {
		t.Fatalf("restored task: Get = %v, %v; want 5", v, err)
	}
}

// crashChild runs a worker whose task blocks until the process is killed.
func crashChild(url string) {
	pool := gocelery.NewRedisPool(url)
	broker := gocelery.NewRedisBroker(pool)
	broker.VisibilityTimeout = time.Second
	cli, err := gocelery.NewCeleryClient(broker, gocelery.NewRedisBackend(pool), 1)
	if err != nil {
		os.Exit(2)
	}
	cli.Register("worker.add", func(a, b int) int {
		c := pool.Get()
		c.Do("SET", "child:running", 1)
		c.Close()
		select {} // until SIGKILL
	})
	cli.StartWorker()
	select {}
}
