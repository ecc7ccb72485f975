package gocelery_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// TestMain stops the RabbitMQ node the AMQP tests share, once they are done.
func TestMain(m *testing.M) {
	code := m.Run()
	celerytest.StopSharedRabbitMQ()
	os.Exit(code)
}

// amqpVHost gives the test a fresh vhost on the shared RabbitMQ node (under CI=true a missing
// rabbitmq-server fails the test).
func amqpVHost(t *testing.T) *celerytest.VHost {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs rabbitmq-server")
	}
	return celerytest.SharedRabbitMQ(t).VHost(t)
}

// pySendEnv publishes with the real Celery producer on the given broker and backend.
func pySendEnv(t *testing.T, peer celerytest.Peer, env []string, specs any) []string {
	t.Helper()
	raw, err := json.Marshal(specs)
	if err != nil {
		t.Fatal(err)
	}
	out := celerytest.RunPython(t, peer, env, time.Minute, "send.py", "--spec", string(raw))
	var sent struct {
		IDs []string `json:"ids"`
	}
	if err := json.Unmarshal(out, &sent); err != nil {
		t.Fatalf("send.py printed %q: %v", out, err)
	}
	return sent.IDs
}

// pyGetEnv reads results with Python's AsyncResult(id).get() on the given backend.
func pyGetEnv(t *testing.T, peer celerytest.Peer, env []string, timeout time.Duration, ids ...string) map[string]pyResult {
	t.Helper()
	args := append([]string{"--timeout", fmt.Sprint(timeout.Seconds())}, ids...)
	out := celerytest.RunPython(t, peer, env, time.Minute+timeout*time.Duration(len(ids)), "get_result.py", args...)
	var got struct {
		Results []pyResult `json:"results"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("get_result.py printed %q: %v", out, err)
	}
	m := map[string]pyResult{}
	for _, res := range got.Results {
		m[res.ID] = res
	}
	return m
}

// rawPublish puts p on queue q through the default exchange, on a connection of its own, as a
// foreign producer would.
func rawPublish(t *testing.T, v *celerytest.VHost, q string, p amqp.Publishing) {
	t.Helper()
	ch := v.Channel(t)
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	dc, err := ch.PublishWithDeferredConfirm("", q, false, false, p)
	if err != nil {
		t.Fatal(err)
	}
	if !dc.Wait() {
		t.Fatal("publish not confirmed")
	}
}

// waitQueues polls the vhost's queues until ok holds (10 s at most).
func waitQueues(t *testing.T, v *celerytest.VHost, ok func(map[string]celerytest.Queue) bool) map[string]celerytest.Queue {
	t.Helper()
	var qs map[string]celerytest.Queue
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if qs = v.Queues(t); ok(qs) {
			return qs
		}
	}
	t.Fatalf("queues never reached the expected state: %+v", qs)
	return nil
}

// TestGoceleryAMQPProgramBuilds builds testdata/amqpprogram, a gocelery v1 program on RabbitMQ
// (NewAMQPCeleryBroker, NewAMQPCeleryBackend, a connection of its own) with only its import
// paths changed, as a module of its own, then runs it against a real RabbitMQ: its worker
// serves its own Delay and DelayKwargs with results in the AMQP backend.
func TestGoceleryAMQPProgramBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds a module")
	}
	bin := buildProgram(t, "amqpprogram")
	v := amqpVHost(t)
	run := exec.Command(bin)
	run.Env = append(os.Environ(), "AMQP_URL="+v.URL())
	out, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("program: %v\n%s", err, out)
	}
	for _, want := range []string{"add: 8334 of type float64", "multiply: 42 ready true stored 42", "done"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("program output lacks %q:\n%s", want, out)
		}
	}
}
