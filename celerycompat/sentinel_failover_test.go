package celerycompat_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// failoverRun is what one failover run saw.
type failoverRun struct {
	mu          sync.Mutex
	accepted    map[string]time.Time // task id -> when Send (or Python's apply_async) returned
	ran         map[string]int       // Go task id -> runs
	firstRunAt  time.Time            // first Go run after the kill
	firstSendAt time.Time            // first accepted Go send after the kill
	sendErrors  int
	killedAt    time.Time
}

func (r *failoverRun) run(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ran[id]++
	if !r.killedAt.IsZero() && r.firstRunAt.IsZero() {
		r.firstRunAt = time.Now()
	}
}

// TestSentinelFailover runs a mixed Go/Python workload on sentinel:// URLs, SIGKILLs the master
// a third of the way through, and checks that Go producers and workers and the Python 5.7
// worker carry on with the promoted replica, without a restart. It reports tasks accepted, run,
// lost and run twice, and the time to recover. With WaitReplicas=1 no accepted task may be lost;
// without it, losses are the ones Redis' asynchronous replication allows and are only reported.
func TestSentinelFailover(t *testing.T) {
	for _, tc := range []struct {
		name string
		wait int
	}{{"async", 0}, {"wait1", 1}} {
		t.Run(tc.name, func(t *testing.T) { sentinelFailoverRun(t, 2000, tc.wait) })
	}
}

func sentinelFailoverRun(t *testing.T, total, waitReplicas int) {
	// Two replicas: after the failover the new master still has one, so WaitReplicas=1 can be met.
	s := celerytest.StartSentinelsN(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const pyEvery = 10 // every 10th task is cap.add for the Python worker
	// Both Python peers serve queue "py"; results name the worker (result_extended).
	env := []string{"CAP_MASTER_NAME=" + celerytest.SentinelMaster, "CAP_VISIBILITY_TIMEOUT=5", "CAP_RESULT_EXTENDED=1"}
	pyWorkers := map[string]*celerytest.PyWorker{
		"py57": celerytest.StartPyWorker(t, celerytest.CeleryNew, s.URL(0), s.URL(1), env,
			"--hostname", "py57@%h", "--queues", "py", "--prefetch", "4"),
		"py52": celerytest.StartPyWorker(t, celerytest.CeleryOld, s.URL(0), s.URL(1), env,
			"--hostname", "py52@%h", "--queues", "py", "--prefetch", "4"),
	}

	r := &failoverRun{accepted: map[string]time.Time{}, ran: map[string]int{}}
	newBroker := func(waitReplicas int) *cc.Broker {
		b, err := cc.NewBroker(sentinelPool(t, s, 0, 16), cc.BrokerConfig{VisibilityTimeout: 5 * time.Second,
			WaitReplicas: waitReplicas})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	backend, err := cc.NewBackend(sentinelPool(t, s, 1, 16), cc.BackendConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wctx, stopWorkers := context.WithCancel(ctx)
	defer func() { stopWorkers(); wg.Wait() }()
	for i := range 2 {
		w, err := cc.NewWorker(newBroker(0), cc.WorkerConfig{Hostname: fmt.Sprintf("go%d@failover", i),
			Concurrency: 8, PrefetchMultiplier: 4, Backend: backend, RestoreInterval: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Register("fo.count", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
			r.run(req.ID)
			return nil, nil
		})); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Run(wctx); err != nil {
				t.Errorf("worker %d: Run: %v", i, err)
			}
		}()
	}

	// Python's producer on the same URLs, before the failover: its tasks run on the Go workers.
	raw, _ := json.Marshal(map[string]any{"name": "fo.count", "count": 50})
	out := celerytest.RunPython(t, celerytest.CeleryNew, []string{"BROKER_URL=" + s.URL(0), "BACKEND_URL=" + s.URL(1),
		"CAP_MASTER_NAME=" + celerytest.SentinelMaster}, 60*time.Second, "send.py", "--spec", string(raw))
	var sent pySent
	if err := json.Unmarshal(out, &sent); err != nil {
		t.Fatalf("send.py output %q: %v", out, err)
	}
	for _, id := range sent.IDs {
		r.accepted[id] = time.Now()
	}

	producer, err := cc.NewProducer(newBroker(waitReplicas), cc.ProducerConfig{Backend: backend})
	if err != nil {
		t.Fatal(err)
	}
	var pyIDs []string
	var recovered time.Duration
	promotedc := make(chan time.Duration, 1)
	for n := range total {
		if n == total/3 {
			r.mu.Lock()
			r.killedAt = time.Now()
			r.mu.Unlock()
			s.Master.Kill()
			go func(since time.Time) {
				d, err := s.AwaitFailover(since, 30*time.Second)
				if err != nil {
					t.Error(err)
				}
				promotedc <- d
			}(r.killedAt)
		}
		id := fmt.Sprintf("fo-%05d", n)
		name, opts := "fo.count", []cc.SendOption{cc.WithTaskID(id)}
		if n%pyEvery == 0 {
			name, opts = "cap.add", append(opts, cc.WithQueue("py"))
		}
		// A producer that wants its task sent retries; each retry may deliver it twice.
		for {
			_, err := producer.Send(ctx, name, []any{n, 1}, nil, opts...)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("send %s: %v", id, err)
			}
			r.sendErrors++
			time.Sleep(100 * time.Millisecond)
		}
		r.mu.Lock()
		r.accepted[id] = time.Now()
		if !r.killedAt.IsZero() && r.firstSendAt.IsZero() {
			r.firstSendAt = time.Now()
			recovered = r.firstSendAt.Sub(r.killedAt)
		}
		r.mu.Unlock()
		if n%pyEvery == 0 {
			pyIDs = append(pyIDs, id)
		}
		time.Sleep(time.Millisecond)
	}
	promoted := <-promotedc

	// Wait for the Go tasks (visibility timeout 5 s: a message held by a worker whose ack was
	// lost comes back after it) and the Python results.
	pySet := map[string]bool{}
	for _, id := range pyIDs {
		pySet[id] = true
	}
	goLost := func() []string {
		r.mu.Lock()
		defer r.mu.Unlock()
		var lost []string
		for id := range r.accepted {
			if !pySet[id] && r.ran[id] == 0 {
				lost = append(lost, id)
			}
		}
		return lost
	}
	pyDone := map[string]bool{}
	pyShare := map[string]int{} // Python node (before "@") -> results
	deadline := time.Now().Add(40 * time.Second)
	for time.Now().Before(deadline) {
		for _, id := range pyIDs {
			if pyDone[id] {
				continue
			}
			if m, err := backend.GetMeta(ctx, id); err == nil && m.Status == cc.StateSuccess {
				pyDone[id] = true
				node, _, _ := strings.Cut(m.Worker, "@")
				pyShare[node]++
			}
		}
		if len(goLost()) == 0 && len(pyDone) == len(pyIDs) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	lost := goLost()
	r.mu.Lock()
	twice, runs := 0, 0
	for _, n := range r.ran {
		runs += n
		if n > 1 {
			twice++
		}
	}
	firstRun := r.firstRunAt.Sub(r.killedAt)
	r.mu.Unlock()
	var lostAfter int // accepted once the new master took over: never allowed to be lost
	for _, id := range lost {
		if r.accepted[id].After(r.killedAt.Add(promoted)) {
			lostAfter++
		}
	}
	t.Logf("failover (WaitReplicas=%d, master + 2 replicas, 2 Go workers x 8 + Python %s worker, 2 shared cores): accepted %d (%d Python-sent), "+
		"Go runs %d, lost %d (after promotion %d), run twice %d; Python results %d/%d %v; send errors %d; "+
		"sentinels promoted after %v, first accepted send %v, first Go run %v after the kill",
		waitReplicas, "5.7 and a 5.2.6", len(r.accepted), len(sent.IDs), runs, len(lost), lostAfter, twice, len(pyDone), len(pyIDs), pyShare,
		r.sendErrors, promoted.Round(time.Millisecond), recovered.Round(time.Millisecond), firstRun.Round(time.Millisecond))
	if lostAfter > 0 {
		t.Errorf("%d tasks accepted after the promotion never ran: %v", lostAfter, lost)
	}
	if waitReplicas > 0 && len(lost) > 0 {
		t.Errorf("WaitReplicas=%d and still %d accepted tasks lost: %v", waitReplicas, len(lost), lost)
	}
	// The Python workers hold at most 2x4 prefetched messages; a 5.2.6 worker that stalls on the
	// old master (seen elsewhere, see README) may leave those few unfinished. Not more.
	if missing := len(pyIDs) - len(pyDone); missing > len(lost)+8 {
		var ids []string
		for _, id := range pyIDs {
			if !pyDone[id] {
				ids = append(ids, id)
			}
		}
		t.Errorf("%d of %d cap.add tasks have no result from the Python workers: %v", missing, len(pyIDs), ids)
		t.Logf("master switches:\n%s\ndata nodes now:\n%s", s.Switches(), s.DataNodes("py", "celery"))
		for name, w := range pyWorkers { // what each Python worker did after the kill
			l := w.Log()
			t.Logf("%s log, last 3000 bytes:\n%s", name, l[max(0, len(l)-3000):])
		}
	}
	if r.firstRunAt.IsZero() {
		t.Error("no Go task ran after the kill")
	}
}

// TestSentinelCelery52 puts Debian's Celery 5.2.6 beside Go on sentinel:// URLs: its worker runs
// tasks Go sends and its producer's tasks run on a Go worker. After a SIGKILL of the master the Go
// side carries on; 5.2.6's worker is known to keep dialling the dead master (design notes), so the
// test only reports whether it recovered within 15 s and does not wait longer.
func TestSentinelCelery52(t *testing.T) {
	s := celerytest.StartSentinels(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := []string{"CAP_MASTER_NAME=" + celerytest.SentinelMaster}
	celerytest.StartPyWorker(t, celerytest.CeleryOld, s.URL(0), s.URL(1), env, "--hostname", "py52@%h", "--queues", "py")
	b, err := cc.NewBroker(sentinelPool(t, s, 0, 8), cc.BrokerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	backend, err := cc.NewBackend(sentinelPool(t, s, 1, 8), cc.BackendConfig{})
	if err != nil {
		t.Fatal(err)
	}
	producer, err := cc.NewProducer(b, cc.ProducerConfig{Backend: backend})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan string, 100)
	w, err := cc.NewWorker(b, cc.WorkerConfig{Hostname: "go@c52", Backend: backend})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Register("fo.count", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		ran <- req.ID
		return nil, nil
	})); err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	wdone := make(chan error, 1)
	go func() { wdone <- w.Run(wctx) }()
	defer func() { stop(); <-wdone }()

	add := func(within time.Duration) (any, error) {
		res, err := producer.Send(ctx, "cap.add", []any{2, 3}, nil, cc.WithQueue("py"))
		if err != nil {
			return nil, err
		}
		gctx, gcancel := context.WithTimeout(ctx, within)
		defer gcancel()
		return res.Get(gctx)
	}
	if v, err := add(30 * time.Second); err != nil || fmt.Sprint(v) != "5" {
		t.Fatalf("Go -> Celery 5.2.6 worker on sentinel URLs: %v, %v", v, err)
	}
	raw, _ := json.Marshal(map[string]any{"name": "fo.count", "count": 3})
	out := celerytest.RunPython(t, celerytest.CeleryOld, []string{"BROKER_URL=" + s.URL(0), "BACKEND_URL=" + s.URL(1),
		"CAP_MASTER_NAME=" + celerytest.SentinelMaster}, 60*time.Second, "send.py", "--spec", string(raw))
	var sent pySent
	if err := json.Unmarshal(out, &sent); err != nil {
		t.Fatalf("send.py output %q: %v", out, err)
	}
	for range sent.IDs {
		select {
		case <-ran:
		case <-time.After(30 * time.Second):
			t.Fatal("a task Celery 5.2.6 sent on sentinel URLs did not run on the Go worker")
		}
	}

	killed := time.Now()
	s.Master.Kill()
	s.WaitFailover(killed, 30*time.Second)
	var res *cc.AsyncResult
	for {
		if res, err = producer.Send(ctx, "fo.count", nil, nil); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case <-ran:
		t.Logf("Go producer and worker recovered %v after the kill", time.Since(killed).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatalf("the Go worker ran nothing after the failover (task %s)", res.ID)
	}
	if v, err := add(15 * time.Second); err != nil {
		t.Logf("Celery 5.2.6 worker after the failover: no result within 15 s (%v): its known limit, see README", err)
	} else {
		t.Logf("Celery 5.2.6 worker after the failover: answered %v", v)
	}
}

// TestSentinelLostWrites measures what asynchronous replication costs: 16 producers publish as
// fast as they can, the replicas stall (SIGSTOP, as a slow link or a busy replica would) for the
// last second before the master is SIGKILLed, and every message whose publish returned nil before
// the kill is looked for on the promoted replica. Without WaitReplicas many are missing (the
// master had them only in its replication buffer; reported); with WaitReplicas=1 none may be.
// On loopback without the stall, the replicas had every acknowledged message in our runs.
func TestSentinelLostWrites(t *testing.T) {
	for _, wait := range []int{0, 1} {
		t.Run(fmt.Sprintf("wait=%d", wait), func(t *testing.T) {
			s := celerytest.StartSentinelsN(t, 2)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			b, err := cc.NewBroker(sentinelPool(t, s, 0, 32), cc.BrokerConfig{WaitReplicas: wait})
			if err != nil {
				t.Fatal(err)
			}
			p, err := cc.NewProducer(b, cc.ProducerConfig{})
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var acked []string // publishes that returned nil before the kill
			var killed bool
			var wg sync.WaitGroup
			sctx, stopSending := context.WithCancel(ctx)
			for g := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; sctx.Err() == nil; i++ {
						id := fmt.Sprintf("lw-%02d-%06d", g, i)
						_, err := p.Send(sctx, "lw.noop", nil, nil, cc.WithTaskID(id))
						mu.Lock()
						if err == nil && !killed {
							acked = append(acked, id)
						}
						stop := killed
						mu.Unlock()
						if stop {
							return
						}
					}
				}()
			}
			time.Sleep(500 * time.Millisecond)
			for _, r := range s.Replicas {
				r.Signal(syscall.SIGSTOP)
			}
			time.Sleep(time.Second)
			mu.Lock()
			killed = true
			n := len(acked)
			s.Master.Kill()
			mu.Unlock()
			for _, r := range s.Replicas {
				r.Signal(syscall.SIGCONT)
			}
			stopSending()
			wg.Wait()
			s.WaitFailover(time.Now(), 30*time.Second)
			addr, err := s.MasterAddr()
			if err != nil {
				t.Fatal(err)
			}
			present := map[string]bool{}
			raw, err := redis.ByteSlices(nodeDo(t, addr, 0, "LRANGE", "celery", 0, -1))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range raw {
				var env struct {
					Headers struct {
						ID string `json:"id"`
					} `json:"headers"`
				}
				if err := json.Unmarshal(m, &env); err != nil {
					t.Fatal(err)
				}
				present[env.Headers.ID] = true
			}
			var lost int
			for _, id := range acked[:n] {
				if !present[id] {
					lost++
				}
			}
			t.Logf("WaitReplicas=%d, 16 senders, master + 2 replicas, 2 shared cores: %d publishes acknowledged in the 1.5 s before the SIGKILL (replicas stalled for the last 1 s), %d of them missing on the promoted replica",
				wait, n, lost)
			if wait > 0 && lost > 0 {
				t.Errorf("WaitReplicas=%d lost %d acknowledged publishes", wait, lost)
			}
			if wait == 0 && lost == 0 {
				t.Errorf("replicas stalled for 1 s and no acknowledged publish was lost: the measurement cannot see losses")
			}
		})
	}
}
