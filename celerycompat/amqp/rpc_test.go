package amqp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// newRPCApp is NewApp with ResultBackend rpc:// on a fresh vhost, speaking to peer.
func newRPCApp(t *testing.T, peer celerytest.Peer, url string) *App {
	t.Helper()
	if url == "" {
		url = newVHost(t).URL()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	app, err := NewApp(ctx, celerycompat.Config{BrokerURL: url, ResultBackend: "rpc://", PeerVersion: rpcPeerVersion(peer)})
	if err != nil {
		t.Fatalf("NewApp rpc://: %v", err)
	}
	t.Cleanup(func() { _ = app.Close() })
	return app
}

// rpcPeerVersion is the PeerVersion that writes exactly what peer's rpc backend writes (5.7
// changed the body shape).
func rpcPeerVersion(peer celerytest.Peer) celerycompat.Version {
	if peer == celerytest.CeleryNew {
		return celery57
	}
	return celerycompat.Celery52
}

// rpcCall is rpc_call.py's output.
type rpcCall struct {
	Results []struct {
		ID        string         `json:"id"`
		SeenState *string        `json:"seen_state"`
		State     string         `json:"state"`
		Result    any            `json:"result"`
		Traceback *string        `json:"traceback"`
		Exc       map[string]any `json:"exc"`
		Raised    map[string]any `json:"raised"`
	} `json:"results"`
	CeleryVersion string `json:"celery_version"`
}

// TestRPCGoWorkerPythonGet: a Python client on result_backend='rpc://' sends tasks that a Go
// worker (an App on rpc://, task_track_started on) runs; Python's get() returns the Go result,
// raises the Go failure as the Python exception it names, and sees STARTED while a task runs.
func TestRPCGoWorkerPythonGet(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			v := newVHost(t)
			app := newRPCApp(t, peer, v.URL())
			w, err := app.Worker(celerycompat.WorkerConfig{Hostname: "go@rpc", Concurrency: 2, TrackStarted: true})
			if err != nil {
				t.Fatal(err)
			}
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(w.Register("cap.add", celerycompat.HandlerFunc(func(_ context.Context, req *celerycompat.Request) (any, error) {
				var sum float64
				for _, a := range req.Args {
					n, err := a.(json.Number).Float64()
					if err != nil {
						return nil, err
					}
					sum += n
				}
				return sum, nil
			})))
			must(w.Register("cap.fail", celerycompat.HandlerFunc(func(context.Context, *celerycompat.Request) (any, error) {
				return nil, celerycompat.NewTaskError("capapp.MyError", "boom", 7)
			})))
			must(w.Register("cap.sleep", celerycompat.HandlerFunc(func(ctx context.Context, _ *celerycompat.Request) (any, error) {
				select {
				case <-time.After(1500 * time.Millisecond):
				case <-ctx.Done():
				}
				return "slept", nil
			})))
			runGoWorker(t, w)
			// cap.sleep first: once a get() has started Python's result consumer, AsyncResult.state
			// on rpc:// no longer sees new messages until the next get() drains them.
			spec, _ := json.Marshal([]map[string]any{
				{"name": "cap.sleep", "args": []any{1}, "wait_state": "STARTED"},
				{"name": "cap.add", "args": []any{2, 3}},
				{"name": "cap.fail"},
			})
			out := celerytest.RunPython(t, peer, []string{"BROKER_URL=" + v.URL()}, 90*time.Second, "rpc_call.py", "--spec", string(spec), "--timeout", "30")
			var res rpcCall
			if err := json.Unmarshal(out, &res); err != nil || len(res.Results) != 3 {
				t.Fatalf("rpc_call.py: %v\n%s", err, out)
			}
			if r := res.Results[1]; r.State != "SUCCESS" || jsonish(r.Result) != jsonish(5) || r.Raised != nil {
				t.Errorf("cap.add: %+v, want SUCCESS 5", r)
			}
			r := res.Results[2]
			wantExc := map[string]any{"type": "MyError", "module": "capapp", "args": []any{"boom", float64(7)}}
			if r.State != "FAILURE" {
				t.Errorf("cap.fail: state %s, want FAILURE", r.State)
			}
			if diff := cmp.Diff(wantExc, r.Raised); diff != "" {
				t.Errorf("cap.fail: get() raised (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(wantExc, r.Exc); diff != "" {
				t.Errorf("cap.fail: get(propagate=False) returned (-want +got):\n%s", diff)
			}
			if r := res.Results[0]; r.SeenState == nil || *r.SeenState != "STARTED" || r.State != "SUCCESS" || r.Result != "slept" {
				t.Errorf("cap.sleep: %+v (seen %v), want STARTED seen, then SUCCESS \"slept\"", r, deref(r.SeenState))
			}
		})
	}
}

// TestRPCPythonWorkerGoGet: a Go App on rpc:// sends tasks to a Python worker on
// result_backend='rpc://' (task_track_started on); the Go AsyncResult's Get, Wait and State
// return what the Python worker sent back, STARTED while the task runs, and the state stays
// readable once received, as Celery's client keeps it.
func TestRPCPythonWorkerGoGet(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			v := newVHost(t)
			pw := celerytest.StartPyWorker(t, peer, v.URL(), "rpc://", []string{"CAP_TRACK_STARTED=1"})
			app := newRPCApp(t, peer, v.URL())
			ctx := testCtx(t)
			add, err := app.Send(ctx, "cap.add", []any{20, 22}, nil)
			if err != nil {
				t.Fatal(err)
			}
			fail, err := app.Send(ctx, "cap.fail", nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			slow, err := app.Send(ctx, "cap.sleep", []any{1}, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := add.Get(ctx)
			if err != nil || jsonish(got) != jsonish(42) {
				t.Fatalf("cap.add Get: %v, %v; worker log:\n%s", got, err, pw.Log())
			}
			if s, err := add.State(ctx); err != nil || s != celerycompat.StateSuccess {
				t.Errorf("cap.add State after Get: %s, %v", s, err)
			}
			_, err = fail.Get(ctx)
			var te *celerycompat.TaskError
			if !errors.As(err, &te) || te.ExcType != "MyError" || te.ExcModule != "capapp" || te.Message() != "boom" || te.State != string(celerycompat.StateFailure) {
				t.Errorf("cap.fail Get: %v (%+v), want MyError(boom) from capapp", err, te)
			}
			if m, err := fail.Wait(ctx); err != nil || m.Status != celerycompat.StateFailure || m.Traceback == "" {
				t.Errorf("cap.fail Wait: %+v, %v; want FAILURE with the Python traceback", m, err)
			}
			started := false
			for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				s, err := slow.State(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if s == celerycompat.StateStarted {
					started = true
					break
				}
				if s.Ready() {
					break
				}
			}
			if !started {
				t.Error("cap.sleep: STARTED never seen")
			}
			if got, err := slow.Get(ctx); err != nil || jsonish(got) != jsonish(1) {
				t.Errorf("cap.sleep Get: %v, %v", got, err)
			}
		})
	}
}

// TestRPCReplyQueueAndChords: the reply queue is declared as Celery declares it (named after the
// app's oid = the reply_to of its tasks, auto-delete, x-expires = result_expires in ms, durable
// as the peer's Celery makes it), and a chord on rpc:// fails with ErrChordUnsupported.
func TestRPCReplyQueueAndChords(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			v := newVHost(t)
			app := newRPCApp(t, peer, v.URL())
			q := app.RPC().ReplyQueue()
			var row map[string]any
			for _, r := range v.List(t, "list_queues", "name", "durable", "auto_delete", "exclusive", "arguments") {
				if r["name"] == q {
					row = r
				}
			}
			if row == nil {
				t.Fatalf("reply queue %q not declared", q)
			}
			want := map[string]any{"name": q, "durable": peer == celerytest.CeleryNew, "auto_delete": true, "exclusive": false,
				"arguments": []any{[]any{"x-expires", "signedint", float64(86400000)}}}
			if diff := cmp.Diff(want, row); diff != "" {
				t.Errorf("reply queue (-want +got):\n%s", diff)
			}
			ctx := testCtx(t)
			r, err := app.Send(ctx, "cap.add", []any{1, 2}, nil)
			if err != nil {
				t.Fatal(err)
			}
			c := consume(t, app.AMQP(), celerycompat.ConsumerConfig{Queues: []string{"celery"}, Prefetch: 1})
			d := next(t, c, 1, 20*time.Second)[0]
			if d.Message.ReplyTo != q || d.Message.CorrelationID != r.ID {
				t.Errorf("task reply_to %q correlation_id %q, want %q and %q", d.Message.ReplyTo, d.Message.CorrelationID, q, r.ID)
			}
			p, err := app.Producer(celerycompat.ProducerConfig{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.SendChord(ctx, []celerycompat.Signature{{Task: "cap.add", Args: []any{1, 1}}}, celerycompat.Signature{Task: "cap.tsum"})
			if !errors.Is(err, celerycompat.ErrChordUnsupported) {
				t.Errorf("SendChord on rpc://: %v, want ErrChordUnsupported", err)
			}
		})
	}
}

// TestRPCWireMatchesPython: the reply a Python worker publishes for a task and the one
// RPCBackend publishes for the same state carry the same properties and the same body (but for
// date_done's value). Both land in plain queues read with basic.get.
func TestRPCWireMatchesPython(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			tr, v := newTransport(t, Config{Codec: peerCodec(peer)})
			celerytest.StartPyWorker(t, peer, v.URL(), "rpc://", nil)
			declareReplyQueue(t, v, "py-replies")
			declareReplyQueue(t, v, "go-replies")
			for _, task := range []struct {
				name string
				args []any
			}{{"cap.add", []any{20, 22}}, {"cap.fail", nil}} {
				m := taskMsg("celery", task.args...)
				m.Task, m.Kwargs, m.ReplyTo = task.name, nil, "py-replies"
				publish(t, tr, m)
				py := getWithin(t, v, "py-replies", 30*time.Second)

				rb, err := NewRPCBackend(testCtx(t), tr, RPCConfig{PeerVersion: rpcPeerVersion(peer)})
				if err != nil {
					t.Fatal(err)
				}
				meta, err := rb.format.DecodeMeta(m.ID, py.Body)
				if err != nil {
					t.Fatal(err)
				}
				meta.Raw = nil
				req := &celerycompat.Message{ID: m.ID, CorrelationID: m.ID, ReplyTo: "go-replies"}
				if _, err := rb.StoreState(testCtx(t), req, *meta); err != nil {
					t.Fatal(err)
				}
				_ = rb.Close()
				goMsg := getWithin(t, v, "go-replies", 10*time.Second)

				props := func(d amqp091.Delivery) map[string]any {
					if len(d.Headers) == 0 {
						// py-amqp sends an empty application_headers table; amqp091 omits an
						// empty one. kombu reads both as {}.
						d.Headers = nil
					}
					return map[string]any{"content_type": d.ContentType, "content_encoding": d.ContentEncoding,
						"delivery_mode": d.DeliveryMode, "priority": d.Priority, "correlation_id": d.CorrelationId,
						"reply_to": d.ReplyTo, "headers": d.Headers, "exchange": d.Exchange, "routing_key_is_queue": d.RoutingKey != ""}
				}
				if diff := cmp.Diff(props(py), props(goMsg)); diff != "" {
					t.Errorf("%s: reply properties (-python +go):\n%s", task.name, diff)
				}
				if py.DeliveryMode != 1 || py.CorrelationId != m.ID {
					t.Errorf("%s: python reply delivery_mode %d correlation_id %q", task.name, py.DeliveryMode, py.CorrelationId)
				}
				body := func(raw []byte) []string {
					var kv map[string]any
					if err := json.Unmarshal(raw, &kv); err != nil {
						t.Fatalf("reply body: %v\n%s", err, raw)
					}
					keys := []string{}
					for _, k := range orderedKeys(t, raw) {
						if k == "date_done" {
							keys = append(keys, k)
							continue
						}
						b, _ := json.Marshal(kv[k])
						keys = append(keys, k+"="+string(b))
					}
					return keys
				}
				if diff := cmp.Diff(body(py.Body), body(goMsg.Body)); diff != "" {
					t.Errorf("%s: reply body (-python +go):\n%s\npython: %s\ngo:     %s", task.name, diff, py.Body, goMsg.Body)
				}
			}
		})
	}
}

// declareReplyQueue declares a plain transient queue on the default exchange.
func declareReplyQueue(t *testing.T, v *celerytest.VHost, q string) {
	t.Helper()
	ch := v.Channel(t)
	if _, err := ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
}

// getWithin polls q with basic.get until a message arrives.
func getWithin(t *testing.T, v *celerytest.VHost, q string, d time.Duration) amqp091.Delivery {
	t.Helper()
	ch := v.Channel(t)
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		m, ok, err := ch.Get(q, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return m
		}
	}
	t.Fatalf("no message in %s within %v", q, d)
	return amqp091.Delivery{}
}

// orderedKeys lists a JSON object's top-level keys in document order.
func orderedKeys(t *testing.T, raw []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

func deref(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

// TestRPCReconnect: after the broker closes the connection (the auto-delete reply queue goes with
// its consumer), the backend declares and consumes its reply queue again, and a result published
// afterwards reaches the waiting AsyncResult.
func TestRPCReconnect(t *testing.T) {
	tr, v := newTransport(t, Config{})
	ctx := testCtx(t)
	rb, err := NewRPCBackend(ctx, tr, RPCConfig{ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rb.Close() })
	waiting := make(chan error, 1)
	go func() {
		m, err := celerycompat.AsyncResultOn(rb, "after").Wait(ctx)
		if err == nil && m.Status != celerycompat.StateSuccess {
			err = errors.New("state " + string(m.Status))
		}
		waiting <- err
	}()
	rb.mu.Lock()
	old := rb.ch
	rb.mu.Unlock()
	v.CloseConnections(t, "test: lost connection")
	waitFor(t, func() bool { rb.mu.Lock(); defer rb.mu.Unlock(); return rb.ch != old })
	waitQueues(t, v, func(qs map[string]celerytest.Queue) bool { return qs[rb.ReplyQueue()].Consumers == 1 })
	req := &celerycompat.Message{ID: "after", ReplyTo: rb.ReplyQueue()}
	if _, err := rb.StoreState(ctx, req, celerycompat.ResultMeta{TaskID: "after", Status: celerycompat.StateSuccess, Result: 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waiting:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the result published after the reconnect never reached the waiter")
	}
	if err := rb.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := rb.WaitMeta(ctx, "other"); !errors.Is(err, celerycompat.ErrBackend) {
		t.Errorf("WaitMeta after Close: %v, want ErrBackend", err)
	}
}

// TestRPCGoToGo: on one rpc:// App a Go worker's SUCCESS, FAILURE and STARTED reach the App's
// AsyncResult, and State keeps the received state after Get, as Celery's client does.
func TestRPCGoToGo(t *testing.T) {
	app := newRPCApp(t, celerytest.CeleryNew, "")
	w, err := app.Worker(celerycompat.WorkerConfig{Hostname: "go@rpc", TrackStarted: true})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	if err := w.Register("go.wait", celerycompat.HandlerFunc(func(ctx context.Context, _ *celerycompat.Request) (any, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return "done", nil
	})); err != nil {
		t.Fatal(err)
	}
	if err := w.Register("go.fail", celerycompat.HandlerFunc(func(context.Context, *celerycompat.Request) (any, error) {
		return nil, celerycompat.NewTaskError("ValueError", "bad", 42)
	})); err != nil {
		t.Fatal(err)
	}
	runGoWorker(t, w)
	ctx := testCtx(t)
	slow, err := app.Send(ctx, "go.wait", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { s, _ := slow.State(ctx); return s == celerycompat.StateStarted })
	close(release)
	if got, err := slow.Get(ctx); err != nil || got != "done" {
		t.Errorf("go.wait: %v, %v", got, err)
	}
	if s, _ := slow.State(ctx); s != celerycompat.StateSuccess {
		t.Errorf("State after Get: %s", s)
	}
	fail, err := app.Send(ctx, "go.fail", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fail.Get(ctx)
	var te *celerycompat.TaskError
	if !errors.As(err, &te) || te.ExcType != "ValueError" || te.Error() != "ValueError: bad, 42" {
		t.Errorf("go.fail: %v", err)
	}
	if err := fail.Forget(ctx); err != nil {
		t.Fatal(err)
	}
	if s, _ := fail.State(ctx); s != celerycompat.StatePending {
		t.Errorf("State after Forget: %s, want PENDING", s)
	}
}
