package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// fleetTasks is how many tasks TestFleet runs: FLEET_TASKS, default 20000 (about a minute on two
// shared cores); set it lower for a quick run.
func fleetTasks(t *testing.T) int {
	n := 20000
	if v := os.Getenv("FLEET_TASKS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 100 {
			t.Fatalf("FLEET_TASKS=%q: want a number >= 100", v)
		}
	}
	return n
}

// pyRunLine is what tasks.py prints when it starts a task.
var pyRunLine = regexp.MustCompile(`开始处理任务 \[业务 ID: ([0-9a-f-]+)\]`)

// TestFleet runs 8 Go worker processes and 2 Python workers (the original tasks.py) on one Redis,
// pushes FLEET_TASKS tasks through the Go API, and SIGKILLs one Go worker and one Python worker
// at random moments (FLEET_KILL_PYTHON=0 spares the Python one). Nothing may be lost: every task
// ends SUCCESS with exactly one stored callback, except at most one task that the evidence in
// fleet_evidence_test.go charges to kombu's own BRPOP window in the killed Python worker
// (celery/celery#7950), which is logged, not failed. It reports each worker's share and the
// duplicates.
//
//	FLEET_TASKS=2000 go test -count=1 -run TestFleet ./examples/e2e/
func TestFleet(t *testing.T) {
	n := fleetTasks(t)
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("seed %d", seed)

	r := newRig(t)
	killPython := os.Getenv("FLEET_KILL_PYTHON") != "0"
	var mon *monitor
	if killPython {
		// Before any service, so that every command is recorded.
		mon = startMonitor(t, r.redis)
	}
	// A killed worker's messages come back after the visibility timeout; the Go workers' restore
	// sweep (every 10 s) returns them, whoever held them. Tasks take milliseconds, far below it.
	r.workerEnv = []string{"VISIBILITY_TIMEOUT=10", "CONCURRENCY=4"}
	// 20,000 submissions at once would wait past HEADER_TIMEOUT for one of the API's
	// MAX_CONCURRENT (64) slots and be refused with 503, as a bounded server must: submit 64 at a time.
	r.loadConcurrency = 64
	r.goReceiver()
	r.goAPI()
	var goWorkers []*proc
	for i := range 8 {
		goWorkers = append(goWorkers, r.goWorker(fmt.Sprintf("go-worker-%d", i)))
	}
	pyWorkers := []*proc{r.pyWorker("py-worker-0"), r.pyWorker("py-worker-1")}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := r.loadInBackgroundCtx(ctx, n, 20*time.Minute)
	// Kill moments: a random callback count between 10% and 60% of the run, one for each.
	goAt := int64(n/10 + rng.IntN(n/2))
	pyAt := int64(n/10 + rng.IntN(n/2))
	goVictim, pyVictim := goWorkers[rng.IntN(len(goWorkers))], pyWorkers[rng.IntN(len(pyWorkers))]
	victims := 2
	if !killPython {
		victims, pyAt = 1, 1<<62
	}
	killed := map[string]int64{}
	var pyk *pyKill
	for len(killed) < victims {
		st := r.waitUnique(min(goAt, pyAt), 10*time.Minute)
		if _, ok := killed[goVictim.name]; !ok && st.Unique >= goAt {
			goVictim.kill()
			killed[goVictim.name] = st.Unique
			goAt = 1 << 62
		}
		if _, ok := killed[pyVictim.name]; !ok && st.Unique >= pyAt {
			k := mon.killPython(t, r.redis, pyVictim)
			pyk = &k
			killed[pyVictim.name] = st.Unique
			pyAt = 1 << 62
		}
	}
	res := waitOrStall(t, r, done, cancel)
	t.Logf("SIGKILLed %s at %d callbacks; Python victim %s killed: %v (at %d)", goVictim.name, killed[goVictim.name], pyVictim.name, killPython, killed[pyVictim.name])
	kombuLost := checkFleet(t, r, mon, pyk, res, n)
	if mon != nil {
		mon.mu.Lock()
		t.Logf("MONITOR recorded %d commands; the Python victim's last BRPOP/unacked write: %s", mon.seq, mon.victimMarks(pyk))
		mon.mu.Unlock()
	}

	// Shares. A Go worker's last run stores its node name in the result (result_extended); the
	// Python workers store none, so their runs are counted from their logs (every start).
	finishedBy := r.resultWorkers()
	byWorker := map[string]int{}
	goPID := map[string]string{} // node name -> process name
	for _, w := range goWorkers {
		goPID[fmt.Sprintf("celerybridge.%d@", w.cmd.Process.Pid)] = w.name
	}
	for _, node := range finishedBy {
		name := "python"
		for prefix, proc := range goPID {
			if strings.HasPrefix(node, prefix) {
				name = proc
			}
		}
		byWorker[name]++
	}
	pyRuns := map[string]int{}
	for _, w := range pyWorkers {
		for _, m := range pyRunLine.FindAllStringSubmatch(w.log(), -1) {
			pyRuns[m[1]]++
			byWorker[w.name+" (starts)"]++
		}
	}
	var pyTwice int
	for _, c := range pyRuns {
		if c > 1 {
			pyTwice++
		}
	}
	var names []string
	for k := range byWorker {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		fmt.Fprintf(&b, " %s=%d", k, byWorker[k])
	}
	t.Logf("fleet of 8 Go (CONCURRENCY=4) + 2 Python (solo) workers, %d tasks, 2 shared cores: lost %d (in kombu's BRPOP window); "+
		"tasks finished by:%s; callbacks delivered more than once (suppressed by the receiver) %d; "+
		"tasks a Python worker started more than once %d",
		n, kombuLost, b.String(), res.rep.Suppressed, pyTwice)
	if len(finishedBy) != n-kombuLost {
		t.Errorf("%d results, want %d", len(finishedBy), n-kombuLost)
	}
}

// stallAfter is how long the fleet's callbacks may stop arriving before the load test is ended:
// far past the visibility timeout (10 s) plus the restore sweep (10 s), which bring back
// whatever a killed worker held.
const stallAfter = 60 * time.Second

// waitOrStall waits for the load test's outcome, cancelling it once no callback has arrived for
// stallAfter (something was lost; the report then says what).
func waitOrStall(t *testing.T, r *rig, done <-chan loadResult, cancel context.CancelFunc) loadResult {
	t.Helper()
	last, since := int64(-1), time.Now()
	for {
		select {
		case res := <-done:
			return res
		case <-time.After(time.Second):
		}
		if u := r.stats().Unique; u != last {
			last, since = u, time.Now()
		} else if time.Since(since) > stallAfter {
			t.Logf("no callback for %v at %d: ending the load test", stallAfter, u)
			cancel()
		}
	}
}

// checkFleet checks the fleet's report for n tasks: exact, but for tasks lost in kombu's BRPOP
// window in the killed Python worker (see fleet_evidence_test.go), which it logs and counts.
func checkFleet(t *testing.T, r *rig, mon *monitor, pyk *pyKill, res loadResult, n int) int {
	t.Helper()
	rep := res.rep
	if rep == nil {
		t.Fatalf("load test did not run: %v", res.err)
	}
	lostBiz := map[string]bool{}
	for _, id := range append(append([]string{}, rep.NotProcessed...), rep.MissingCallbacks...) {
		lostBiz[id] = true
	}
	if len(lostBiz) == 0 || mon == nil {
		checkExact(t, rep, res.err, n)
		return 0
	}
	var lost []string // Celery task ids
	raw, err := os.ReadFile(filepath.Join(r.dir, "submitted_tasks.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if parts := strings.Split(l, ","); len(parts) == 3 && lostBiz[parts[1]] {
			lost = append(lost, parts[2])
		}
	}
	var b strings.Builder
	rep.Print(&b)
	if len(lost) != len(lostBiz) || rep.Submitted != n || rep.Submission.Failed != 0 || rep.Duplicates != 0 || len(rep.DeadLettered) != 0 {
		t.Fatalf("want an exact report for %d tasks but for lost ones; err %v\n%s", n, res.err, b.String())
	}
	a := mon.attribute(t, r.redis, pyk, lost)
	for _, why := range a.kombu {
		t.Logf("lost in kombu's BRPOP window of the SIGKILLed Python worker, kombu's known loss "+
			"(https://github.com/celery/celery/issues/7950), not celerybridge's: %s", why)
	}
	if len(a.ours) != 0 {
		t.Fatalf("%d task(s) lost that kombu's BRPOP window does not explain:\n%s\n%s", len(a.ours), strings.Join(a.ours, "\n"), b.String())
	}
	return len(a.kombu)
}

// resultWorkers maps each stored result's task id to its "worker" field ("" when the result has
// none, as the Python worker's).
func (r *rig) resultWorkers() map[string]string {
	r.t.Helper()
	c := r.redis.Pool(0).Get()
	defer c.Close()
	out := map[string]string{}
	cursor := 0
	for {
		v, err := redis.Values(c.Do("SCAN", cursor, "MATCH", "celery-task-meta-*", "COUNT", 1000))
		if err != nil {
			r.t.Fatal(err)
		}
		cursor, _ = redis.Int(v[0], nil)
		keys, _ := redis.Strings(v[1], nil)
		for _, k := range keys {
			raw, err := redis.Bytes(c.Do("GET", k))
			if err != nil {
				r.t.Fatal(err)
			}
			var meta struct {
				Status string `json:"status"`
				Worker string `json:"worker"`
			}
			if err := json.Unmarshal(raw, &meta); err != nil {
				r.t.Fatalf("%s: %v", k, err)
			}
			if meta.Status == "SUCCESS" {
				out[strings.TrimPrefix(k, "celery-task-meta-")] = meta.Worker
			}
		}
		if cursor == 0 {
			return out
		}
	}
}
