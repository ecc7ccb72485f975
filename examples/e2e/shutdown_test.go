package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// TestWorkerShutdown stops the Go worker the way a person does, with signals, while it runs a
// task, and checks that it behaves like a Celery worker: the first SIGTERM is a warm shutdown
// that lets the task finish; a second is a cold shutdown that stops it and hands its message
// back to the queue, recording no failure; WARM_SHUTDOWN_TIMEOUT turns a warm shutdown cold when
// it runs out. Every way ends with exit status 0 and no error logged.
func TestWorkerShutdown(t *testing.T) {
	tests := []struct {
		name      string
		taskSleep string
		extra     []string
		signals   int
		within    time.Duration // from the first signal to the exit
		want      string        // the task's state afterwards
		requeued  bool          // its message back on the queue
		logs      string
	}{
		{"warm: the running task finishes", "1.5", nil, 1, 10 * time.Second, "SUCCESS", false, "warm shutdown done"},
		{"cold: the running task is handed back", "60", nil, 2, 10 * time.Second, "STARTED", true, "cold shutdown done"},
		{"warm bound: then cold", "60", []string{"WARM_SHUTDOWN_TIMEOUT=1"}, 1, 10 * time.Second, "STARTED", true, "warm shutdown bound reached"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			r.taskSleep = tt.taskSleep
			r.goReceiver()
			r.goAPI()
			w := r.goWorker("go-worker", tt.extra...)
			var sub struct {
				BusinessTaskID string `json:"business_task_id"`
				CeleryTaskID   string `json:"celery_task_id"`
			}
			if code := postJSON(t, r.apiURL()+"/submit-task", `{"task_index": 1}`, &sub); code != 200 {
				t.Fatalf("submit: %d", code)
			}
			state := func() string {
				var st taskStatus
				getJSON(t, r.apiURL()+"/task-status/"+sub.BusinessTaskID, &st)
				return st.Status
			}
			waitState(t, state, "STARTED", 15*time.Second)

			start := time.Now()
			w.signal(syscall.SIGTERM)
			if tt.signals == 2 {
				time.Sleep(500 * time.Millisecond)
				if w.exited() {
					t.Fatalf("the worker exited on the first SIGTERM with a 60 s task running; a warm shutdown waits for it:\n%s", w.tail(20))
				}
				w.signal(syscall.SIGTERM)
			}
			select {
			case <-w.done:
			case <-time.After(tt.within):
				t.Fatalf("the worker did not exit within %v of the first signal:\n%s", tt.within, w.tail(20))
			}
			if w.err != nil {
				t.Errorf("exit: %v, want status 0:\n%s", w.err, w.tail(20))
			}
			t.Logf("exited %.1fs after the first signal", time.Since(start).Seconds())
			logs := w.log()
			if strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, tt.logs) {
				t.Errorf("worker log: want no error and %q:\n%s", tt.logs, w.tail(20))
			}
			if got := state(); got != tt.want {
				t.Errorf("state after the shutdown: %s, want %s", got, tt.want)
			}
			queued, err := redis.Int(r.redis.Do(0, "LLEN", "celery"), nil)
			if err != nil {
				t.Fatal(err)
			}
			unacked, err := redis.Int(r.redis.Do(0, "HLEN", "unacked"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int{true: 1, false: 0}[tt.requeued]; queued != want || unacked != 0 {
				t.Errorf("queue %d, un-acked %d after the shutdown; want %d and 0", queued, unacked, want)
			}
		})
	}
}

// waitState polls state until it returns want.
func waitState(t *testing.T, state func() string, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := state()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("state %q, want %q", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
