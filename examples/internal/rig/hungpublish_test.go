package rig

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/gomodule/redigo/redis"
)

// stopOnGet is the broker's pool; once armed, the next connection it hands out is handed out
// and then Redis is paused (SIGSTOP): the command sent on it waits in Redis's socket.
type stopOnGet struct {
	celerycompat.Pool
	pid   int
	armed atomic.Bool
}

func (p *stopOnGet) GetContext(ctx context.Context) (redis.Conn, error) {
	c, err := p.Pool.GetContext(ctx)
	if err == nil && p.armed.CompareAndSwap(true, false) {
		err = syscall.Kill(p.pid, syscall.SIGSTOP)
		if err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, err
}

// TestHungRedisDuringPublish: Redis hangs after a submission's id mapping was written, with its
// publish sent: the client gets 503 within the Redis deadline, and once Redis resumes and runs
// what waited in its socket, the queue holds no message for it (issue 12 item 5). Before the
// publish carried its deadline to Redis, the message was queued when Redis resumed (and the
// POST did not even answer while Redis hung).
func TestHungRedisDuringPublish(t *testing.T) {
	r := startRedis(t)
	cfg := testConfig(t, r, env{"REDIS_TIMEOUT": "0.3"})
	deps := testDeps(t, cfg)
	if deps.Results == nil {
		deps.Results = deps.Broker // the mapping goes around the pausing pool
	}
	broker := &stopOnGet{Pool: deps.Broker, pid: r.r.PID()}
	deps.Broker = broker
	e, err := NewAPI(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	base := serveLoopback(t, e)
	client := &http.Client{Timeout: 5 * time.Second}
	post := func() (int, string, error) {
		resp, err := client.Post(base+"/submit-task", "application/json", strings.NewReader(`{"a": 1}`))
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	if code, out, err := post(); code != 200 { // warms the pools, declares the queue
		t.Fatalf("warm-up: %d %s %v", code, out, err)
	}
	queued := func() int {
		n, err := redis.Int(r.do(0, "LLEN", "celery"))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := queued()

	broker.armed.Store(true)
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(broker.pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	start := time.Now()
	code, out, err := post()
	took := time.Since(start)
	if broker.armed.Load() {
		t.Fatal("the submission never asked the broker for a connection")
	}
	// The publish fails at its deadline (0.3 s); deleting the mapping again takes up to
	// dropTimeout while Redis hangs.
	if err != nil || code != 503 || took > dropTimeout+2*time.Second {
		t.Errorf("POST with Redis hung during the publish: %d %s %v after %v, want 503 within %v", code, out, err, took, dropTimeout+2*time.Second)
	}
	resume()
	eventually(t, 5*time.Second, func() (bool, string) {
		_, err := r.do(0, "PING")
		return err == nil, fmt.Sprint(err)
	})
	time.Sleep(300 * time.Millisecond) // let Redis run what was waiting in its sockets
	if after := queued(); after != before {
		t.Errorf("after a 503 and Redis resuming, %d messages queued where there were %d: the failed submission's task was queued", after, before)
	}
}
