package celerytest

import (
	"encoding/hex"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	code := m.Run()
	StopSharedRabbitMQ()
	os.Exit(code)
}

// TestRabbitMQVHosts checks the shared node: two vhosts are isolated from each other, the list
// helpers report what a real Celery producer declared and published, and the node listens only
// on loopback.
func TestRabbitMQVHosts(t *testing.T) {
	r := SharedRabbitMQ(t)
	t.Logf("node %s amqp %d dist %d epmd %d started in %v (2 shared cores)", r.Node, r.Port, r.DistPort, r.EPMDPort, r.StartTime)
	begin := time.Now()
	a := r.VHost(t)
	perVHost := time.Since(begin)
	b := r.VHost(t)
	t.Logf("vhost %s in %v (2 shared cores)", a.Name, perVHost)
	if a.Name == b.Name {
		t.Fatalf("two vhosts named %q", a.Name)
	}
	if !strings.HasPrefix(a.URL(), "amqp://guest:guest@127.0.0.1:") || !strings.HasSuffix(a.URL(), "/"+a.Name) {
		t.Errorf("URL = %q", a.URL())
	}

	// A fresh vhost has only the default exchanges and no queues.
	if q := a.Queues(t); len(q) != 0 {
		t.Errorf("fresh vhost has queues: %v", q)
	}
	exchanges := map[string]bool{}
	for _, row := range a.List(t, "list_exchanges", "name", "type") {
		exchanges[row["name"].(string)] = true
	}
	for _, want := range []string{"", "amq.direct", "amq.fanout", "amq.topic"} {
		if !exchanges[want] {
			t.Errorf("fresh vhost lacks exchange %q: %v", want, exchanges)
		}
	}

	// Celery 5.7.0 publishes two tasks into a; b stays empty.
	backend := StartRedis(t).URL(1) // 5.7's redis backend subscribes when it sends
	out := RunPython(t, CeleryNew, []string{"BROKER_URL=" + a.URL(), "BACKEND_URL=" + backend},
		time.Minute, "send.py", "--name", "cap.add", "--args", "[1, 2]", "--count", "2")
	var sent struct{ IDs []string }
	if err := json.Unmarshal(out, &sent); err != nil || len(sent.IDs) != 2 {
		t.Fatalf("send.py: %v\n%s", err, out)
	}
	if got := a.Queues(t)["celery"]; got.Ready != 2 || got.Unacked != 0 {
		t.Errorf("vhost a: celery queue = %+v, want 2 ready", got)
	}
	if q := b.Queues(t); len(q) != 0 {
		t.Errorf("vhost b sees queues of a: %v", q)
	}
	var bound bool
	for _, row := range a.List(t, "list_bindings", "source_name", "destination_name", "routing_key") {
		if row["source_name"] == "celery" && row["destination_name"] == "celery" && row["routing_key"] == "celery" {
			bound = true
		}
	}
	if !bound {
		t.Errorf("no binding celery -> celery (rk celery) in %v", a.List(t, "list_bindings", "source_name", "destination_name", "routing_key"))
	}
	// Ctl passes -p: purging a's queue leaves it empty.
	a.Ctl(t, "purge_queue", "celery")
	if got := a.Queues(t)["celery"]; got.Ready != 0 {
		t.Errorf("after purge_queue: %+v", got)
	}

	// Loopback only: AMQP, distribution and epmd.
	listening := listeners(t)
	for _, port := range []int{r.Port, r.DistPort, r.EPMDPort} {
		addrs := listening[port]
		if len(addrs) == 0 {
			t.Errorf("nothing listens on port %d", port)
		}
		for _, a := range addrs {
			if !a.IsLoopback() {
				t.Errorf("port %d listens beyond loopback, on %v", port, a)
			}
		}
	}
}

// listeners reads the kernel's TCP tables (/proc/net/tcp and tcp6) and returns, for each
// listening port, the addresses it listens on.
func listeners(t *testing.T) map[int][]net.IP {
	t.Helper()
	out := map[int][]net.IP{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		for _, line := range strings.Split(string(raw), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 4 || fields[3] != "0A" { // 0A: LISTEN
				continue
			}
			hexIP, hexPort, ok := strings.Cut(fields[1], ":")
			port, err1 := strconv.ParseUint(hexPort, 16, 16)
			ipb, err2 := hex.DecodeString(hexIP)
			if !ok || err1 != nil || err2 != nil {
				t.Fatalf("%s: unreadable line %q", f, line)
			}
			// The kernel writes each 32-bit word of the address in host (little-endian) order.
			for i := 0; i+4 <= len(ipb); i += 4 {
				ipb[i], ipb[i+1], ipb[i+2], ipb[i+3] = ipb[i+3], ipb[i+2], ipb[i+1], ipb[i]
			}
			out[int(port)] = append(out[int(port)], net.IP(ipb))
		}
	}
	return out
}

// TestRabbitMQPythonRoundTrip: Celery 5.7.0 sends a task over AMQP into a vhost of the shared
// node, a real Python worker (acks_late, prefetch 1) runs it and stores the result in Redis, and
// the queue is left empty with nothing unacknowledged.
func TestRabbitMQPythonRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts a Python worker")
	}
	r := SharedRabbitMQ(t)
	v := r.VHost(t)
	redis := StartRedis(t)
	env := []string{"CAP_ACKS_LATE=1"}
	w := StartPyWorker(t, CeleryNew, v.URL(), redis.URL(1), env, "--prefetch", "1",
		"--", "--without-mingle", "--without-gossip", "--without-heartbeat")
	out := RunPython(t, CeleryNew, append(env, "BROKER_URL="+v.URL(), "BACKEND_URL="+redis.URL(1)),
		time.Minute, "send.py", "--name", "cap.add", "--args", "[20, 22]")
	var sent struct{ IDs []string }
	if err := json.Unmarshal(out, &sent); err != nil || len(sent.IDs) != 1 {
		t.Fatalf("send.py: %v\n%s", err, out)
	}
	out = RunPython(t, CeleryNew, []string{"BROKER_URL=" + v.URL(), "BACKEND_URL=" + redis.URL(1)},
		time.Minute, "get_result.py", "--timeout", "30", sent.IDs[0])
	var got struct {
		Results []struct {
			State  string
			Result any
		}
	}
	if err := json.Unmarshal(out, &got); err != nil || len(got.Results) != 1 {
		t.Fatalf("get_result.py: %v\n%s", err, out)
	}
	if got.Results[0].State != "SUCCESS" || got.Results[0].Result != float64(42) {
		t.Fatalf("result = %+v, want SUCCESS 42\nworker log:\n%s", got.Results[0], w.Log())
	}
	q := v.Queues(t)
	if c := q["celery"]; c.Ready != 0 || c.Unacked != 0 || c.Consumers != 1 {
		t.Errorf("celery queue after the run = %+v, want empty with the worker consuming", c)
	}
	// The worker declared its pidbox queue (remote control) in the vhost.
	var pidbox bool
	for name := range q {
		if strings.HasSuffix(name, ".celery.pidbox") {
			pidbox = true
		}
	}
	if !pidbox {
		t.Errorf("no <hostname>.celery.pidbox queue: %v", q)
	}
	// CloseConnections drops the worker's connections; Celery reconnects (new connections, new
	// client ports in their names) and consumes again.
	before := map[any]bool{}
	for _, c := range v.List(t, "list_connections", "name") {
		before[c["name"]] = true
	}
	if len(before) == 0 {
		t.Fatal("list_connections shows no connection of the running worker")
	}
	v.CloseConnections(t, "test: connection lost")
	deadline := time.Now().Add(45 * time.Second)
	for {
		var fresh bool
		for _, c := range v.List(t, "list_connections", "name") {
			fresh = fresh || !before[c["name"]]
		}
		if fresh && v.Queues(t)["celery"].Consumers == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker did not reconnect within 45s: %v\n%s", v.Queues(t), w.Log())
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err := w.Terminate(30 * time.Second); err != nil {
		t.Error(err)
	}
}

// TestRabbitMQOwnNodeRestart checks a test-owned node: a durable queue with a persistent message
// survives Stop/Start, a Kill (crash) leaves no process behind, and the watchdog stops the node
// when its stdin closes.
func TestRabbitMQOwnNodeRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: boots a second rabbitmq node")
	}
	r := StartRabbitMQ(t)
	t.Logf("own node started in %v (2 shared cores)", r.StartTime)
	v := r.VHost(t)
	RunPython(t, CeleryNew, []string{"BROKER_URL=" + v.URL(), "BACKEND_URL=" + StartRedis(t).URL(1)},
		time.Minute, "send.py", "--name", "cap.add", "--args", "[1, 2]")
	pid := r.cmd.Process.Pid
	begin := time.Now()
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("graceful stop in %v", time.Since(begin))
	if syscall.Kill(-pid, 0) == nil {
		t.Errorf("process group %d still alive after Stop", pid)
	}
	r.Start(t)
	t.Logf("restart in %v", r.StartTime)
	if got := v.Queues(t)["celery"]; got.Ready != 1 {
		t.Errorf("after restart celery queue = %+v, want the persistent message back", got)
	}
	r.Kill()
	// The VM may linger as a zombie where PID 1 does not reap orphans; what matters is that
	// nothing listens any more.
	if c, err := net.DialTimeout("tcp", r.Addr(), time.Second); err == nil {
		c.Close()
		t.Errorf("AMQP port %d still accepts connections after Kill", r.Port)
	}
	if out, err := exec.Command(r.epmd, "-port", strconv.Itoa(r.EPMDPort), "-names").CombinedOutput(); err == nil {
		t.Errorf("the node's epmd still answers after Kill: %s", out)
	}
}
