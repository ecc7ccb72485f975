package celerycompat_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// TestSentinelFanoutCompat: on Sentinel, Celery 5.2.6 (kombu < 5.4) names the broadcast
// channels "/{db}.celery.pidbox" literally. With SentinelFanoutCompat a Go worker answers 5.2.6's
// `celery inspect ping`, a Go control client reaches a 5.2.6 worker, and a request the Go client
// publishes on both channels is answered once. Without it the 5.2.6 CLI does not reach the Go
// worker (the gap the option closes).
func TestSentinelFanoutCompat(t *testing.T) {
	s := celerytest.StartSentinels(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := []string{"CAP_MASTER_NAME=" + celerytest.SentinelMaster}
	celerytest.StartPyWorker(t, celerytest.CeleryOld, s.URL(0), s.URL(1), env, "--hostname", "py52@compat", "--queues", "py")

	start := func(compat bool, node string) *cc.Broker {
		b, err := cc.NewBroker(sentinelPool(t, s, 0, 8), cc.BrokerConfig{SentinelFanoutCompat: compat})
		if err != nil {
			t.Fatal(err)
		}
		w, err := cc.NewWorker(b, cc.WorkerConfig{Hostname: node, WithoutMingle: true, Queues: []string{"go-" + node}})
		if err != nil {
			t.Fatal(err)
		}
		wctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.Run(wctx) }()
		t.Cleanup(func() { stop(); <-done })
		return b
	}
	compatBroker := start(true, "go@compat")
	start(false, "go@plain")

	// Celery 5.2.6's CLI on the sentinel URL: it publishes on "/{db}.celery.pidbox" only.
	pyPing := func() map[string]bool {
		py, _ := celerytest.Python(t, celerytest.CeleryOld)
		cctx, ccancel := context.WithTimeout(ctx, 60*time.Second)
		defer ccancel()
		cmd := exec.CommandContext(cctx, py, "-m", "celery", "-A", "capapp", "inspect", "ping", "--json", "--timeout", "3")
		cmd.Dir = celerytest.PythonDir(t)
		cmd.Env = append(cmd.Environ(), "PYTHONPATH="+cmd.Dir, "BROKER_URL="+s.URL(0), "BACKEND_URL="+s.URL(1),
			"CAP_MASTER_NAME="+celerytest.SentinelMaster)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		_ = cmd.Run()              // exits non-zero when some node is missing; the JSON says who answered
		var replies map[string]any // {"node": {"ok": "pong"}, ...}
		line := out.Bytes()
		if i := bytes.IndexByte(line, '{'); i >= 0 {
			line = line[i:]
		}
		if err := json.Unmarshal(bytes.TrimSpace(line), &replies); err != nil {
			t.Fatalf("celery 5.2.6 inspect ping output %q (%s): %v", out.String(), errb.String(), err)
		}
		got := map[string]bool{}
		for node := range replies {
			got[node] = true
		}
		return got
	}
	got := pyPing()
	if !got["go@compat"] || !got["py52@compat"] {
		t.Fatalf("celery 5.2.6 inspect ping on sentinel answered by %v, want go@compat and py52@compat", got)
	}
	if got["go@plain"] {
		t.Fatalf("go@plain answered 5.2.6 without SentinelFanoutCompat: %v (the test no longer shows the gap)", got)
	}

	// The Go client with the option reaches the 5.2.6 worker and both Go workers, each once.
	ctl, err := cc.NewControl(compatBroker, cc.ControlConfig{})
	if err != nil {
		t.Fatal(err)
	}
	master, err := s.MasterAddr()
	if err != nil {
		t.Fatal(err)
	}
	mc, err := redis.Dial("tcp", master)
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	lpushes := func() int {
		raw, err := redis.String(mc.Do("INFO", "commandstats"))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(raw, "\n") {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "cmdstat_lpush:calls="); ok {
				n, _ := strconv.Atoi(strings.SplitN(rest, ",", 2)[0])
				return n
			}
		}
		return 0
	}
	before := lpushes()
	replies, err := ctl.Ping(ctx, cc.BroadcastTo("go@compat"), cc.BroadcastTimeout(time.Second))
	if err != nil || len(replies) != 1 {
		t.Fatalf("ping go@compat: %v %v", replies, err)
	}
	time.Sleep(500 * time.Millisecond) // a second answer, were there one, would be pushed by now
	if n := lpushes() - before; n != 1 {
		t.Fatalf("go@compat pushed %d replies to one request sent on both channels, want 1", n)
	}
	replies, err = ctl.Ping(ctx, cc.BroadcastTimeout(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range []string{"go@compat", "go@plain", "py52@compat"} {
		if _, ok := replies[node]; !ok {
			t.Errorf("the Go client with SentinelFanoutCompat got no pong from %s (replies from %v)", node, keys(replies))
		}
	}
}

func keys(r cc.Replies) []string {
	out := make([]string, 0, len(r))
	for k := range r {
		out = append(out, k)
	}
	return out
}
