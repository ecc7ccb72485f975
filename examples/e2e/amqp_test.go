package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// newAMQPRig is newRig with the tasks going through a fresh vhost of the shared RabbitMQ node;
// the Redis keeps the results, id mappings and callback outbox.
func newAMQPRig(t *testing.T) *rig {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs rabbitmq-server")
	}
	r := newRig(t)
	r.amqp = celerytest.SharedRabbitMQ(t).VHost(t)
	return r
}

// checkQueueDrained fails the test unless the vhost's celery queue holds nothing, ready or
// un-acked: every message was settled.
func checkQueueDrained(t *testing.T, r *rig) {
	t.Helper()
	var q celerytest.Queue
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if q = r.amqp.Queues(t)["celery"]; q.Ready == 0 && q.Unacked == 0 {
			return
		}
	}
	t.Errorf("queue celery on RabbitMQ after the run: %d ready, %d un-acked; want both 0", q.Ready, q.Unacked)
}

// goOrPython counts the tasks whose one stored callback came from the Go dispatcher (it sends
// celery_task_id; the original Python handler does not), and fails on a task without exactly one.
func goOrPython(t *testing.T, r *rig) (goRan, pyRan int) {
	t.Helper()
	for _, id := range r.submittedIDs() {
		var cbs storedCallbacks
		if code := getJSON(t, r.receiverURL()+"/callbacks/"+id, &cbs); code != 200 || len(cbs.Callbacks) != 1 {
			t.Fatalf("callbacks of %s: %d %+v", id, code, cbs)
		}
		if cbs.Callbacks[0].CeleryTaskID != "" {
			goRan++
		} else {
			pyRan++
		}
	}
	return goRan, pyRan
}

// TestRigRabbitMQ is the original test on RabbitMQ: the Go API publishes 1000 tasks at once to
// RabbitMQ (CELERY_BROKER_URL=amqp://…), a Go worker and the original Python worker (tasks.py,
// py-amqp) share the queue, results and callbacks go through Redis: submitted = processed =
// callbacks, each task once, both workers ran some, and the queue ends empty.
//
//	go test -count=1 -run TestRigRabbitMQ ./examples/e2e/
func TestRigRabbitMQ(t *testing.T) {
	r := newAMQPRig(t)
	r.taskSleep = "0.001"
	r.goReceiver()
	r.goWorker("go-worker", "CONCURRENCY=4")
	r.pyWorker("py-worker")
	r.goAPI()
	rep, err := r.load(1000, 3*time.Minute, nil)
	checkExact(t, rep, err, 1000)
	goRan, pyRan := goOrPython(t, r)
	t.Logf("over RabbitMQ: the Go worker ran %d tasks, the Python worker %d", goRan, pyRan)
	if goRan == 0 || pyRan == 0 {
		t.Errorf("want both workers to run tasks: Go %d, Python %d", goRan, pyRan)
	}
	checkQueueDrained(t, r)
}

// amqpFleetTasks is how many tasks TestFleetRabbitMQ runs: FLEET_AMQP_TASKS, default 5000.
func amqpFleetTasks(t *testing.T) int {
	n := 5000
	if v := os.Getenv("FLEET_AMQP_TASKS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 100 {
			t.Fatalf("FLEET_AMQP_TASKS=%q: want a number >= 100", v)
		}
	}
	return n
}

// TestFleetRabbitMQ runs 4 Go worker processes (CONCURRENCY=4) and 1 Python worker (tasks.py,
// solo) on one RabbitMQ queue, pushes FLEET_AMQP_TASKS tasks through the Go API, and SIGKILLs one
// Go worker at a random moment between 10% and 60% of the callbacks. RabbitMQ takes back what
// the dead connection held un-acked and redelivers it at once (no visibility timeout on AMQP), so
// nothing may be lost: the report must be exact (every task SUCCESS, one stored callback each;
// callbacks sent twice for a task the victim ran but did not ack are suppressed by the receiver
// and counted). It reports each worker's share and those duplicates.
//
//	FLEET_AMQP_TASKS=5000 go test -count=1 -run TestFleetRabbitMQ ./examples/e2e/
func TestFleetRabbitMQ(t *testing.T) {
	n := amqpFleetTasks(t)
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("seed %d", seed)

	r := newAMQPRig(t)
	r.taskSleep = "0.01" // 10 ms tasks: the Python worker gets a share beside 16 Go slots
	r.workerEnv = []string{"CONCURRENCY=4"}
	r.loadConcurrency = 64 // the API's MAX_CONCURRENT: see TestFleet
	r.goReceiver()
	r.goAPI()
	var goWorkers []*proc
	for i := range 4 {
		goWorkers = append(goWorkers, r.goWorker(fmt.Sprintf("go-worker-%d", i)))
	}
	py := r.pyWorker("py-worker-0")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	begin := time.Now()
	done := r.loadInBackgroundCtx(ctx, n, 10*time.Minute)
	at := int64(n/10 + rng.IntN(n/2))
	victim := goWorkers[rng.IntN(len(goWorkers))]
	r.waitUnique(at, 5*time.Minute)
	victim.kill()
	t.Logf("SIGKILLed %s at %d callbacks", victim.name, at)
	res := waitOrStall(t, r, done, cancel)
	checkExact(t, res.rep, res.err, n)
	elapsed := time.Since(begin)
	checkQueueDrained(t, r)

	// Shares: a Go worker's result names its node (result_extended); the Python worker's runs
	// are counted from its log (every start, so a redelivered task it ran twice counts twice).
	goPID := map[string]string{}
	for _, w := range goWorkers {
		goPID[fmt.Sprintf("celerybridge.%d@", w.cmd.Process.Pid)] = w.name
	}
	share := map[string]int{}
	for _, node := range r.resultWorkers() {
		name := "python (result)"
		for prefix, p := range goPID {
			if strings.HasPrefix(node, prefix) {
				name = p
			}
		}
		share[name]++
	}
	pyStarts := map[string]int{}
	for _, m := range pyRunLine.FindAllStringSubmatch(py.log(), -1) {
		pyStarts[m[1]]++
	}
	pyTwice := 0
	for _, c := range pyStarts {
		if c > 1 {
			pyTwice++
		}
	}
	share[py.name+" (starts)"] = len(pyStarts)
	names := make([]string, 0, len(share))
	for k := range share {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		fmt.Fprintf(&b, " %s=%d", k, share[k])
	}
	t.Logf("RabbitMQ fleet of 4 Go (CONCURRENCY=4) + 1 Python (solo) workers, %d tasks in %.1f s, 2 shared cores: "+
		"lost 0; tasks finished by:%s; callbacks delivered more than once (suppressed by the receiver) %d; "+
		"tasks the Python worker started more than once %d", n, elapsed.Seconds(), b.String(), res.rep.Suppressed, pyTwice)
	if share[victim.name] == 0 {
		t.Logf("note: the victim %s finished no task that kept its result", victim.name)
	}
}
