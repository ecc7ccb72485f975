package celerycompat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/google/go-cmp/cmp"

	"github.com/celerybridge/celerybridge/celerycompat/protocol"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

type chordReturn struct {
	ready   bool
	results []any
	err     error
}

// runChordParts runs the parts concurrently, part i with group index i and the result or error
// results[i], and returns every caller's outcome.
func runChordParts(t testing.TB, b *Backend, gid string, results []any) []chordReturn {
	t.Helper()
	out := make([]chordReturn, len(results))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, res := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			state := StateSuccess
			if _, ok := res.(error); ok {
				state = StateFailure
			}
			idx := i
			ready, rs, err := b.ChordPartReturn(context.Background(), gid, &idx, fmt.Sprintf("%s-part-%d", gid, i), state, res)
			out[i] = chordReturn{ready, rs, err}
		}()
	}
	close(start)
	wg.Wait()
	return out
}

func onlyReady(t testing.TB, outs []chordReturn) chordReturn {
	t.Helper()
	var ready []chordReturn
	for _, o := range outs {
		if o.ready {
			ready = append(ready, o)
		} else if o.err != nil {
			t.Errorf("non-completing part returned error %v", o.err)
		}
	}
	if len(ready) != 1 {
		t.Fatalf("%d callers saw the chord complete, want exactly 1", len(ready))
	}
	return ready[0]
}

// TestChordPartReturnExactlyOnce: N parts finishing in parallel complete the chord exactly once,
// with the results ordered by group index; cleanup removes the keys and late duplicates are
// ignored.
func TestChordPartReturnExactlyOnce(t *testing.T) {
	b, r := newTestBackend(t, BackendConfig{})
	ctx := context.Background()
	for _, n := range []int{1, 2, 16, 50} {
		for round := range 5 {
			gid := fmt.Sprintf("g%d-%d", n, round)
			if err := b.SetChordSize(ctx, gid, n); err != nil {
				t.Fatal(err)
			}
			parts := make([]any, n)
			want := make([]any, n)
			for i := range n {
				parts[i] = i * 10
				want[i] = json.Number(fmt.Sprint(i * 10))
			}
			got := onlyReady(t, runChordParts(t, b, gid, parts))
			if got.err != nil {
				t.Fatal(got.err)
			}
			if diff := cmp.Diff(want, got.results); diff != "" {
				t.Fatalf("%s results (-want +got):\n%s", gid, diff)
			}
			if err := b.CleanupChord(ctx, gid); err != nil {
				t.Fatal(err)
			}
			for _, suffix := range []string{".j", ".t", ".s", ".d"} {
				if n, _ := redis.Int(r.Do(resultDB, "EXISTS", "celery-taskset-meta-"+gid+suffix), nil); n != 0 {
					t.Errorf("%s%s left after cleanup", gid, suffix)
				}
			}
			idx := 0
			ready, _, err := b.ChordPartReturn(ctx, gid, &idx, gid+"-part-0", StateSuccess, 0)
			if ready || err != nil {
				t.Errorf("late duplicate after cleanup: ready=%v err=%v", ready, err)
			}
		}
	}
}

func TestChordPartReturnFailure(t *testing.T) {
	b, _ := newTestBackend(t, BackendConfig{})
	ctx := context.Background()
	if err := b.SetChordSize(ctx, "gf", 3); err != nil {
		t.Fatal(err)
	}
	parts := []any{1, &TaskError{ExcType: "ValueError", ExcModule: "builtins", ExcMessage: []any{"bad", 42}}, errors.New("boom")}
	got := onlyReady(t, runChordParts(t, b, "gf", parts))
	var ce *ChordError
	if !errors.As(got.err, &ce) {
		t.Fatalf("err = %v, want *ChordError", got.err)
	}
	if want := "Dependency gf-part-1 raised ValueError('bad', 42)"; ce.Message() != want {
		t.Errorf("Message = %q, want %q", ce.Message(), want)
	}
	if ce.GroupID != "gf" || ce.TaskID != "gf-part-1" || ce.Cause.ExcType != "ValueError" || ce.Cause.State != "FAILURE" {
		t.Errorf("ChordError = %+v", ce)
	}
	te := protocol.ErrorToTaskError(got.err)
	want := &TaskError{ExcType: "ChordError", ExcModule: "celery.exceptions", ExcMessage: []any{ce.Message()}}
	if diff := cmp.Diff(want, te); diff != "" {
		t.Errorf("stored body exception (-want +got):\n%s", diff)
	}
}

// TestChordStoredShapes checks the keys and values against facts 5.5/A.12.
func TestChordStoredShapes(t *testing.T) {
	b, r := newTestBackend(t, BackendConfig{})
	ctx := context.Background()
	conn, err := redis.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	psc := redis.PubSubConn{Conn: conn}
	psc.Subscribe("celery-taskset-meta-c8.s")
	psc.Receive()

	if err := b.SetChordSize(ctx, "c8", 2); err != nil {
		t.Fatal(err)
	}
	if v, _ := redis.String(r.Do(resultDB, "GET", "celery-taskset-meta-c8.s"), nil); v != "2" {
		t.Errorf(".s = %q, want 2", v)
	}
	if msg, ok := psc.ReceiveWithTimeout(5 * time.Second).(redis.Message); !ok || string(msg.Data) != "2" {
		t.Errorf(".s not published: %v", msg)
	}
	zero := 0
	if ready, _, err := b.ChordPartReturn(ctx, "c8", &zero, "08149936", StateSuccess, 2); ready || err != nil {
		t.Fatalf("first part: ready=%v err=%v", ready, err)
	}
	ready, res, err := b.ChordPartReturn(ctx, "c8", nil, "later", StateSuccess, 4)
	if !ready || err != nil {
		t.Fatalf("second part: ready=%v err=%v", ready, err)
	}
	if diff := cmp.Diff([]any{json.Number("2"), json.Number("4")}, res); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	members, _ := redis.Strings(r.Do(resultDB, "ZRANGE", "celery-taskset-meta-c8.j", 0, -1, "WITHSCORES"), nil)
	if diff := cmp.Diff([]string{`[1, "08149936", "SUCCESS", 2]`, "0", `[1, "later", "SUCCESS", 4]`, "inf"}, members); diff != "" {
		t.Errorf(".j members (-want +got):\n%s", diff)
	}
	for _, k := range []string{".j", ".s", ".d"} {
		if ttl, _ := redis.Int(r.Do(resultDB, "TTL", "celery-taskset-meta-c8"+k), nil); ttl != 86400 {
			t.Errorf("TTL %s = %d, want 86400", k, ttl)
		}
	}

	if err := b.SaveGroup(ctx, "gid1", []string{"t1", "t2"}); err != nil {
		t.Fatal(err)
	}
	got := storedRaw(t, r, "celery-taskset-meta-gid1")
	want := `{"result": [["gid1", null], [[["t1", null], null], [["t2", null], null]]]}`
	if string(got) != want {
		t.Errorf("group meta = %s\nwant %s", got, want)
	}
}

// TestChordDuplicatesAndCounter: a part redelivered before completion counts once, and the .t
// counter (Task.add_to_chord) raises the total.
func TestChordDuplicatesAndCounter(t *testing.T) {
	b, r := newTestBackend(t, BackendConfig{})
	ctx := context.Background()
	b.SetChordSize(ctx, "d1", 2)
	i0, i1, i2 := 0, 1, 2
	steps := []struct {
		idx       *int
		id        string
		result    any
		wantReady bool
	}{
		{&i0, "a", 1, false},
		{&i0, "a", 99, false}, // redelivered, different result: counted once
		{&i1, "b", 2, false},  // would complete, but add_to_chord raised the total
		{&i2, "c", 3, true},
	}
	r.Do(resultDB, "INCR", "celery-taskset-meta-d1.t")
	var res []any
	for _, s := range steps {
		ready, rs, err := b.ChordPartReturn(ctx, "d1", s.idx, s.id, StateSuccess, s.result)
		if err != nil || ready != s.wantReady {
			t.Fatalf("part %s: ready=%v err=%v, want ready=%v", s.id, ready, err, s.wantReady)
		}
		res = rs
	}
	if diff := cmp.Diff([]any{json.Number("1"), json.Number("2"), json.Number("3")}, res); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
}

func TestChordPartReturnValidation(t *testing.T) {
	r := celerytest.StartRedis(t)
	b := backendOn(t, r, BackendConfig{})
	if _, _, err := b.ChordPartReturn(context.Background(), "", nil, "t", StateSuccess, 1); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("err = %v", err)
	}
	if err := b.SetChordSize(context.Background(), "g", -1); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("err = %v", err)
	}
}

// A *ChordError converts itself (its TaskError method) when a handler returns it: Celery's
// ChordError with the message Python writes.
func TestErrorToTaskErrorChordError(t *testing.T) {
	err := &ChordError{GroupID: "g", TaskID: "t1", Cause: &TaskError{ExcType: "GoError", ExcMessage: []any{"boom"}}}
	want := &TaskError{ExcType: "ChordError", ExcModule: "celery.exceptions", ExcMessage: []any{"Dependency t1 raised GoError('boom')"}}
	if diff := cmp.Diff(want, protocol.ErrorToTaskError(fmt.Errorf("wrapped: %w", err))); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
