package celerycompat_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// mingleRevokes starts a Go worker with a task queued that another node (already running) has
// revoked: the new worker's mingle must learn the id before it fetches, so the task ends REVOKED
// without running.
func mingleRevokes(t *testing.T, s *wstack, taskID string) {
	t.Helper()
	res := s.send("cap.add", []any{1, 2}, nil, cc.WithTaskID(taskID))
	w := s.newWorker(cc.WorkerConfig{Hostname: "go-new@mingle"})
	var ran atomic.Bool
	_ = w.Register("cap.add", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		ran.Store(true)
		return 3, nil
	}))
	runWorker(t, w)
	meta, _ := wait(t, res, 10*time.Second)
	if meta == nil || meta.Status != cc.StateRevoked || ran.Load() {
		t.Fatalf("task revoked on another node before this one started: %v (ran: %v), want REVOKED", meta, ran.Load())
	}
}

func TestMingleLearnsRevokedFromGoWorker(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	old := s.newWorker(cc.WorkerConfig{Hostname: "go-old@mingle", Queues: []string{"elsewhere"}})
	runWorker(t, old)
	ctl := s.control()
	listening(t, ctl, "go-old@mingle")
	if _, err := ctl.Revoke(context.Background(), []string{"revoked-before-start"}, false, cc.BroadcastTo("go-old@mingle")); err != nil {
		t.Fatal(err)
	}
	mingleRevokes(t, s, "revoked-before-start")
}

// TestMingleLearnsRevokedFromPythonWorker: the Go worker's hello is answered by real Python
// workers of both peers, and what they answer is merged.
func TestMingleLearnsRevokedFromPythonWorker(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			celerytest.Python(t, peer)
			s := newWStack(t, cc.BrokerConfig{})
			pyNode := "py@mingle-" + string(peer)
			py := celerytest.StartPyWorker(t, peer, s.r.URL(0), s.r.URL(1), nil, "--hostname", pyNode, "--queues", "pyq")
			ctl := s.control()
			listening(t, ctl, pyNode)
			id := "py-revoked-" + string(peer)
			if _, err := ctl.Revoke(context.Background(), []string{id}, false, cc.BroadcastTo(pyNode)); err != nil {
				t.Fatal(err)
			}
			mingleRevokes(t, s, id)
			eventually(t, 10*time.Second, "the Python worker logging the sync", func() bool {
				return strings.Contains(py.Log(), "sync with go-new@mingle")
			})
		})
	}
}

// TestMingleAloneSendsNoHello: a worker alone in the mailbox has no one to wait for, so it sends
// no hello and starts fetching at once (checked by what it sends, not by timing).
func TestMingleAloneSendsNoHello(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	before := commandStats(t, s.r)
	w := s.newWorker(cc.WorkerConfig{WithoutHeartbeat: true})
	_ = w.Register("cap.add", addHandler)
	runWorker(t, w)
	if _, err := wait(t, s.send("cap.add", []any{1, 2}, nil), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, by := statsDelta(before, commandStats(t, s.r)); by["publish"] > 1 {
		t.Fatalf("%d PUBLISHes for one task with no other worker: %v; want only the result's", by["publish"], by)
	}
}
