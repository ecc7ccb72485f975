package celerycompat

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/celerybridge/celerybridge/celerycompat/protocol"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// backendPeerVersion is what Go writes for each Python peer.
func backendPeerVersion(peer celerytest.Peer) Version {
	if peer == celerytest.CeleryNew {
		return Celery55
	}
	return Celery52
}

// backendScript builds the command running one of the helpers in testdata/backend under peer.
func backendScript(t *testing.T, peer celerytest.Peer, script string, args ...string) *exec.Cmd {
	t.Helper()
	py, _ := celerytest.Python(t, peer)
	path, err := filepath.Abs(filepath.Join("testdata", "backend", script))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, append([]string{path}, args...)...)
	cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1")
	return cmd
}

func runBackendScript(t *testing.T, peer celerytest.Peer, script string, args ...string) []byte {
	t.Helper()
	cmd := backendScript(t, peer, script, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s\n%s", script, err, out, stderr.String())
	}
	return out
}

// pyWait is one line printed by wait_results.py.
type pyWait struct {
	Event         string  `json:"event"`
	ID            string  `json:"id"`
	Woke          float64 `json:"woke"`
	OK            bool    `json:"ok"`
	Value         any     `json:"value"`
	ExcClass      string  `json:"exc_class"`
	ExcModule     string  `json:"exc_module"`
	ExcArgs       []any   `json:"exc_args"`
	Revoked       bool    `json:"revoked"`
	State         string  `json:"state"`
	Traceback     *string `json:"traceback"`
	DateDone      *string `json:"date_done"`
	DateDoneAware bool    `json:"date_done_aware"`
}

// TestBackendInteropGoToPython stores results from Go while Python's AsyncResult.get() waits on
// them: get() must wake through the PUBLISH (it has already read the key when Go stores), return
// the value or raise the matching exception, and parse date_done, for both Celery peers.
func TestBackendInteropGoToPython(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	type goCase struct {
		id      string
		cfg     func(BackendConfig) BackendConfig // nil: the peer's default config
		store   func(context.Context, *Backend, string) error
		check   func(*testing.T, pyWait)
		onlyNew bool
	}
	success := func(v any) func(context.Context, *Backend, string) error {
		return func(ctx context.Context, b *Backend, id string) error {
			_, err := b.MarkSuccess(ctx, id, v)
			return err
		}
	}
	failure := func(e error) func(context.Context, *Backend, string) error {
		return func(ctx context.Context, b *Backend, id string) error {
			_, err := b.MarkFailure(ctx, id, e, "Traceback (most recent call last):\n  File \"main.go\"\nGoError: x\n")
			return err
		}
	}
	wantValue := func(want any) func(*testing.T, pyWait) {
		return func(t *testing.T, w pyWait) {
			if !w.OK {
				t.Fatalf("get() raised %s%v", w.ExcClass, w.ExcArgs)
			}
			if diff := cmp.Diff(want, w.Value); diff != "" {
				t.Errorf("value (-want +got):\n%s", diff)
			}
		}
	}
	wantExc := func(class, module string, args ...any) func(*testing.T, pyWait) {
		return func(t *testing.T, w pyWait) {
			if w.OK {
				t.Fatalf("get() returned %v, want %s raised", w.Value, class)
			}
			if w.ExcClass != class || w.ExcModule != module {
				t.Errorf("raised %s.%s, want %s.%s", w.ExcModule, w.ExcClass, module, class)
			}
			if diff := cmp.Diff(args, w.ExcArgs); diff != "" {
				t.Errorf("exception args (-want +got):\n%s", diff)
			}
		}
	}
	dateCase := func(peer Version, tz *time.Location, wantSuffix string, wantAware bool) goCase {
		done := time.Date(2026, 11, 26, 1, 2, 3, 456789000, time.UTC)
		return goCase{
			cfg: func(c BackendConfig) BackendConfig { c.PeerVersion, c.Timezone = peer, tz; return c },
			store: func(ctx context.Context, b *Backend, id string) error {
				_, err := b.StoreResult(ctx, ResultMeta{TaskID: id, Status: StateSuccess, Result: 1, DateDone: &done})
				return err
			},
			check: func(t *testing.T, w pyWait) {
				if w.DateDone == nil || !strings.HasSuffix(*w.DateDone, wantSuffix) || w.DateDoneAware != wantAware {
					t.Fatalf("Python date_done = %v (aware %v), want suffix %q aware %v", w.DateDone, w.DateDoneAware, wantSuffix, wantAware)
				}
				got, err := protocol.ParsePyTime(*w.DateDone)
				if err != nil || !got.Equal(done) {
					t.Errorf("Python read date_done %s = %v, want %v", *w.DateDone, got, done)
				}
			},
		}
	}
	cases := []goCase{
		{store: success(5), check: wantValue(5.0)},
		{store: success(map[string]any{"a": []any{1, "x", nil, true}}), check: wantValue(map[string]any{"a": []any{1.0, "x", nil, true}})},
		{store: failure(errors.New("boom")), check: wantExc("GoError", "celery.exceptions", "boom")},
		{store: failure(&TaskError{ExcType: "ValueError", ExcModule: "builtins", ExcMessage: []any{"bad", 42}}), check: wantExc("ValueError", "builtins", "bad", 42.0)},
		{store: failure(&TaskError{ExcType: "MyError", ExcModule: "tasks", ExcMessage: []any{"boom"}}), check: wantExc("MyError", "celery.exceptions", "boom")},
		{store: failure(&ChordError{GroupID: "g", TaskID: "t1", Cause: &TaskError{ExcType: "KeyError", ExcMessage: []any{"k"}}}),
			check: wantExc("ChordError", "celery.exceptions", "Dependency t1 raised KeyError('k')")},
		{store: func(ctx context.Context, b *Backend, id string) error {
			_, err := b.MarkRevoked(ctx, id, RevokedReasonRevoked)
			return err
		}, check: func(t *testing.T, w pyWait) {
			wantExc("TaskRevokedError", "celery.exceptions", "revoked")(t, w)
			if !w.Revoked || w.State != "REVOKED" {
				t.Errorf("revoked=%v state=%s", w.Revoked, w.State)
			}
		}},
		{store: func(ctx context.Context, b *Backend, id string) error { // not ready first: get() keeps waiting
			if _, err := b.MarkStarted(ctx, id, 42, "go@host"); err != nil {
				return err
			}
			_, err := b.MarkSuccess(ctx, id, "after started")
			return err
		}, check: wantValue("after started")},
		{onlyNew: true, store: success([]any{time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), protocol.Decimal("1.5"), protocol.UUID("12345678-1234-5678-1234-567812345678")}),
			check: wantValue([]any{
				map[string]any{"py": "datetime", "iso": "2030-01-02T03:04:05+00:00"},
				map[string]any{"py": "Decimal", "str": "1.5"},
				map[string]any{"py": "UUID", "str": "12345678-1234-5678-1234-567812345678"},
			})},
		dateCase(Celery52, nil, ":03.456789", false),
		dateCase(Celery54, nil, "+00:00", true),
		dateCase(Celery55, berlin, "T02:02:03.456789+01:00", true),
	}
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			r := celerytest.StartRedis(t)
			base := BackendConfig{PeerVersion: backendPeerVersion(peer), Codec: Codec{PeerVersion: backendPeerVersion(peer)}}
			var run []goCase
			var ids []string
			for i, c := range cases {
				if c.onlyNew && peer != celerytest.CeleryNew {
					continue
				}
				c.id = fmt.Sprintf("g2p-%02d-%d", i, time.Now().UnixNano())
				run = append(run, c)
				ids = append(ids, c.id)
			}
			cmd := backendScript(t, peer, "wait_results.py", append([]string{r.URL(resultDB)}, ids...)...)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				cmd.Process.Kill()
				cmd.Wait()
				if t.Failed() {
					t.Logf("python stderr:\n%s", stderr.String())
				}
			}()
			lines := make(chan pyWait, 64)
			go func() {
				defer close(lines)
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					var w pyWait
					if err := json.Unmarshal(sc.Bytes(), &w); err != nil {
						w = pyWait{Event: "bad line: " + sc.Text()}
					}
					lines <- w
				}
			}()
			next := func(event, id string) pyWait {
				t.Helper()
				select {
				case w, ok := <-lines:
					if !ok {
						t.Fatalf("python exited early:\n%s", stderr.String())
					}
					if w.Event != event || w.ID != id {
						t.Fatalf("python said %+v, want %s for %s", w, event, id)
					}
					return w
				case <-time.After(30 * time.Second):
					t.Fatalf("no %s line for %s", event, id)
				}
				return pyWait{}
			}
			var maxWake time.Duration
			for i, c := range run {
				cfg := base
				if c.cfg != nil {
					cfg = c.cfg(base)
				}
				b := backendOn(t, r, cfg)
				next("got", c.id) // get() has subscribed and read the (empty) key
				waitFor(t, "python subscription", func() bool { return numSub(t, r, "celery-task-meta-"+c.id) == 1 })
				storedAt := time.Now()
				if err := c.store(context.Background(), b, c.id); err != nil {
					t.Fatal(err)
				}
				w := next("result", c.id)
				sec, frac := math.Modf(w.Woke)
				wake := time.Unix(int64(sec), int64(frac*1e9)).Sub(storedAt)
				maxWake = max(maxWake, wake)
				if wake > 500*time.Millisecond {
					t.Errorf("case %d: get() woke %v after the store; a PUBLISH wakes it at once", i, wake)
				}
				t.Run(fmt.Sprint(i), func(t *testing.T) { c.check(t, w) })
			}
			t.Logf("slowest Python wake-up after a Go store: %v", maxWake)
		})
	}
}

// TestBackendInteropPythonToGo stores results with Celery's own backend API and reads them with
// GetMeta and AsyncResult.Get; Gets started before the store are woken by Python's PUBLISH.
func TestBackendInteropPythonToGo(t *testing.T) {
	type op = map[string]any
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			r := celerytest.StartRedis(t)
			b := backendOn(t, r, BackendConfig{})
			ctx := context.Background()
			request := op{"task": "cap.add", "args": []any{2, 5}, "kwargs": op{"z": 1}, "hostname": "w4@vm",
				"retries": 1, "queue": "celery", "group": "grp", "parent_id": "par"}
			markers := `[datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc), decimal.Decimal("1.5"), uuid.UUID("12345678123456781234567812345678")]`
			ops := []op{
				{"op": "done", "id": "py-done", "result": 5},
				{"op": "done", "id": "py-markers", "result_py": markers},
				{"op": "failure", "id": "py-fail", "exc": []any{"builtins", "ValueError", []any{"bad", 42}}, "traceback": "Traceback (most recent call last):\nValueError: bad\n"},
				{"op": "failure", "id": "py-custom", "exc": []any{"tasks", "MyError", []any{"boom"}}},
				{"op": "retry", "id": "py-retry", "exc": []any{"tasks", "MyError", []any{"try again 0"}}, "traceback": "Retry in 1s"},
				{"op": "revoked", "id": "py-revoked", "reason": "expired"},
				{"op": "started", "id": "py-started", "pid": 13391, "hostname": "w1@vm"},
				{"op": "done", "id": "py-extended", "result": 7, "request": request},
			}
			ready := []string{"py-done", "py-markers", "py-fail", "py-custom", "py-revoked", "py-extended"}
			gets := map[string]<-chan getResult{}
			for _, id := range ready {
				gets[id] = asyncGet(ctx, b.AsyncResult(id))
			}
			waitFor(t, "Go subscriptions", func() bool { return b.consumer.subscriptions() == len(ready) })
			spec, _ := json.Marshal(ops)
			out := runBackendScript(t, peer, "store_results.py", r.URL(resultDB), string(spec))
			t.Logf("python: %s", strings.TrimSpace(string(out)))
			results := map[string]getResult{}
			for id, ch := range gets {
				results[id] = recv(t, ch)
			}

			if g := results["py-done"]; g.err != nil || g.v != json.Number("5") {
				t.Errorf("done: %v %v", g.v, g.err)
			}
			wantMarkers := []any{time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), protocol.Decimal("1.5"), protocol.UUID("12345678-1234-5678-1234-567812345678")}
			if peer == celerytest.CeleryOld { // kombu 5.2: plain strings, "Z" for UTC
				wantMarkers = []any{"2030-01-02T03:04:05Z", "1.5", "12345678-1234-5678-1234-567812345678"}
			}
			if diff := cmp.Diff(wantMarkers, results["py-markers"].v); diff != "" {
				t.Errorf("markers (-want +got):\n%s", diff)
			}
			wantErr := map[string]*TaskError{
				"py-fail":    {ExcType: "ValueError", ExcModule: "builtins", ExcMessage: []any{"bad", json.Number("42")}, Traceback: "Traceback (most recent call last):\nValueError: bad\n", State: "FAILURE"},
				"py-custom":  {ExcType: "MyError", ExcModule: "tasks", ExcMessage: []any{"boom"}, State: "FAILURE"},
				"py-revoked": {ExcType: "TaskRevokedError", ExcModule: "celery.exceptions", ExcMessage: []any{"expired"}, State: "REVOKED"},
			}
			for id, want := range wantErr {
				var te *TaskError
				if !errors.As(results[id].err, &te) {
					t.Errorf("%s: err = %v, want *TaskError", id, results[id].err)
					continue
				}
				if diff := cmp.Diff(want, te); diff != "" {
					t.Errorf("%s (-want +got):\n%s", id, diff)
				}
			}

			retry, err := b.GetMeta(ctx, "py-retry")
			if err != nil {
				t.Fatal(err)
			}
			if retry.Status != StateRetry || retry.DateDone != nil || retry.Traceback != "Retry in 1s" {
				t.Errorf("retry meta: %+v", retry)
			}
			if te, ok := retry.Result.(*TaskError); !ok || te.ExcType != "MyError" || te.State != "RETRY" {
				t.Errorf("retry result: %#v", retry.Result)
			}
			started, err := b.GetMeta(ctx, "py-started")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(map[string]any{"pid": json.Number("13391"), "hostname": "w1@vm"}, started.Result); started.Status != StateStarted || diff != "" {
				t.Errorf("started %s (-want +got):\n%s", started.Status, diff)
			}

			ext, err := b.GetMeta(ctx, "py-extended")
			if err != nil {
				t.Fatal(err)
			}
			one := 1
			wantExt := &ResultMeta{TaskID: "py-extended", Status: StateSuccess, Result: json.Number("7"), Children: ext.Children,
				DateDone: ext.DateDone, GroupID: "grp", ParentID: "par", Name: "cap.add", Args: []any{json.Number("2"), json.Number("5")},
				Kwargs: map[string]any{"z": json.Number("1")}, Worker: "w4@vm", Retries: &one, Queue: "celery", Raw: ext.Raw}
			if diff := cmp.Diff(wantExt, ext); diff != "" {
				t.Errorf("extended (-want +got):\n%s", diff)
			}
			if ext.DateDone == nil || time.Since(*ext.DateDone).Abs() > time.Minute {
				t.Errorf("date_done %v is not now", ext.DateDone)
			}
			naive := !strings.Contains(string(ext.Raw), `+00:00", `)
			if wantNaive := peer == celerytest.CeleryOld; naive != wantNaive {
				t.Errorf("date_done naive=%v, want %v: %s", naive, wantNaive, ext.Raw)
			}
		})
	}
}

// TestChordInteropPython: Python's own chord code reads the parts Go recorded (same results, same
// ChordError text), and Python and Go finishing parts of one chord concurrently complete it
// exactly once.
func TestChordInteropPython(t *testing.T) {
	for _, peer := range celerytest.Peers {
		t.Run(string(peer), func(t *testing.T) {
			r := celerytest.StartRedis(t)
			b := backendOn(t, r, BackendConfig{Codec: Codec{PeerVersion: backendPeerVersion(peer)}})
			ctx := context.Background()
			backendURL, brokerURL := r.URL(resultDB), r.URL(0)

			t.Run("python reads go parts", func(t *testing.T) {
				b.SetChordSize(ctx, "ok", 3)
				runChordParts(t, b, "ok", []any{"a", map[string]any{"k": []any{1, 2}}, nil})
				var got map[string]any
				json.Unmarshal(runBackendScript(t, peer, "chord_parts.py", backendURL, brokerURL, "read", "ok"), &got)
				want := map[string]any{"results": []any{"a", map[string]any{"k": []any{1.0, 2.0}}, nil}}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}

				b.SetChordSize(ctx, "bad", 2)
				outs := runChordParts(t, b, "bad", []any{1, &TaskError{ExcType: "ValueError", ExcModule: "builtins", ExcMessage: []any{"bad", 42}}})
				var ce *ChordError
				if !errors.As(onlyReady(t, outs).err, &ce) {
					t.Fatal("no ChordError")
				}
				json.Unmarshal(runBackendScript(t, peer, "chord_parts.py", backendURL, brokerURL, "read", "bad"), &got)
				if got["chord_error"] != ce.Message() {
					t.Errorf("Python ChordError %q, Go %q", got["chord_error"], ce.Message())
				}
			})

			t.Run("mixed completion", func(t *testing.T) {
				// Even parts by Python, odd parts by Go: Go first, Python first, then both at once.
				const n = 12
				for round, order := range []string{"python finishes", "go finishes", "concurrent", "concurrent"} {
					gid := fmt.Sprintf("mixed-%d", round)
					r.Do(0, "DEL", "celery")
					b.SetChordSize(ctx, gid, n)
					var pyOps []map[string]any
					for i := 0; i < n; i += 2 {
						pyOps = append(pyOps, map[string]any{"id": fmt.Sprintf("%s-%d", gid, i), "index": i, "result": i})
					}
					spec, _ := json.Marshal(pyOps)
					cmd := backendScript(t, peer, "chord_parts.py", backendURL, brokerURL, "parts", gid, string(spec))
					python := func() {
						if out, err := cmd.CombinedOutput(); err != nil {
							t.Errorf("chord_parts.py: %v\n%s", err, out)
						}
					}
					var goReady atomic.Int32
					goParts := func() {
						var wg sync.WaitGroup
						for i := 1; i < n; i += 2 {
							wg.Add(1)
							go func() {
								defer wg.Done()
								idx := i
								ready, res, err := b.ChordPartReturn(ctx, gid, &idx, fmt.Sprintf("%s-%d", gid, i), StateSuccess, i)
								if err != nil {
									t.Error(err)
								}
								if ready {
									goReady.Add(1)
									if len(res) != n {
										t.Errorf("Go completed with %d results", len(res))
									}
								}
							}()
						}
						wg.Wait()
					}
					switch order {
					case "python finishes":
						goParts()
						python()
					case "go finishes":
						python()
						goParts()
					default:
						done := make(chan struct{})
						go func() { defer close(done); python() }()
						goParts()
						<-done
					}
					published, _ := r.Do(0, "LLEN", "celery").(int64)
					if int(goReady.Load())+int(published) != 1 {
						t.Fatalf("%s: chord completed %d times by Go and %d times by Python, want once in total", order, goReady.Load(), published)
					}
					t.Logf("%s: completed by %s", order, map[bool]string{true: "Go", false: "Python"}[goReady.Load() == 1])
				}
			})
		})
	}
}
