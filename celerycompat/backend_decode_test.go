package celerycompat

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/google/go-cmp/cmp"

	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// TestBackendGetMetaDecode reads values in the shapes Python Celery 5.2 and 5.5+ write, and
// checks that malformed ones give a DecodeError naming the field.
func TestBackendGetMetaDecode(t *testing.T) {
	utc := func(s string) *time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return &tm
	}
	tests := []struct {
		name      string
		raw       string // "" = key missing
		want      *ResultMeta
		wantField string // expected DecodeError field
	}{
		{name: "missing is pending", want: &ResultMeta{TaskID: "x", Status: StatePending}},
		{name: "5.2 success naive date", raw: `{"status": "SUCCESS", "result": 5, "traceback": null, "children": [], "date_done": "2026-11-26T01:01:48.086420", "task_id": "x"}`,
			want: &ResultMeta{TaskID: "x", Status: StateSuccess, Result: json.Number("5"), Children: []any{}, DateDone: utc("2026-11-26T01:01:48.08642Z")}},
		{name: "5.5 success offset date", raw: `{"status": "SUCCESS", "result": 5, "traceback": null, "children": [], "date_done": "2026-11-26T02:09:03.219363+01:00", "task_id": "x"}`,
			want: &ResultMeta{TaskID: "x", Status: StateSuccess, Result: json.Number("5"), Children: []any{}, DateDone: utc("2026-11-26T01:09:03.219363Z")}},
		{name: "Z date", raw: `{"status": "SUCCESS", "result": null, "date_done": "2026-11-26T01:09:03Z", "task_id": "x"}`,
			want: &ResultMeta{TaskID: "x", Status: StateSuccess, DateDone: utc("2026-11-26T01:09:03Z")}},
		{name: "kombu markers in result", raw: `{"status": "SUCCESS", "result": [{"__type__": "datetime", "__value__": "2030-01-02T03:04:05+00:00"}, {"__type__": "decimal", "__value__": "1.5"}, {"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}}], "traceback": null, "children": [], "date_done": null, "task_id": "x"}`,
			want: &ResultMeta{TaskID: "x", Status: StateSuccess, Children: []any{},
				Result: []any{time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), protocol.Decimal("1.5"), protocol.UUID("12345678-1234-5678-1234-567812345678")}}},
		{name: "failure", raw: `{"status": "FAILURE", "result": {"exc_type": "ValueError", "exc_message": ["bad", 42], "exc_module": "builtins"}, "traceback": "Traceback...", "children": [], "date_done": "2026-11-26T01:01:48.099426", "task_id": "x"}`,
			want: &ResultMeta{TaskID: "x", Status: StateFailure, Traceback: "Traceback...", Children: []any{}, DateDone: utc("2026-11-26T01:01:48.099426Z"),
				Result: &TaskError{ExcType: "ValueError", ExcModule: "builtins", ExcMessage: []any{"bad", json.Number("42")}, Traceback: "Traceback...", State: "FAILURE"}}},
		{name: "failure old string message, null module", raw: `{"status": "FAILURE", "result": {"exc_type": "E", "exc_message": "boom", "exc_module": null}, "task_id": "x"}`,
			want: &ResultMeta{TaskID: "x", Status: StateFailure, Result: &TaskError{ExcType: "E", ExcMessage: []any{"boom"}, State: "FAILURE"}}},
		{name: "retry without exception", raw: `{"status": "RETRY", "result": null, "traceback": null, "children": [[["x", null], null]], "date_done": null, "task_id": "x"}`,
			want: &ResultMeta{TaskID: "x", Status: StateRetry, Children: []any{[]any{[]any{"x", nil}, nil}}}},
		{name: "custom state", raw: `{"status": "PROGRESS", "result": {"done": 3}, "task_id": "x"}`,
			want: &ResultMeta{TaskID: "x", Status: "PROGRESS", Result: map[string]any{"done": json.Number("3")}}},
		{name: "extended", raw: `{"status": "SUCCESS", "result": 7, "traceback": null, "children": [], "date_done": null, "group_id": "g", "parent_id": "p", "name": "cap.add", "args": [2, 5], "kwargs": {}, "worker": "w4@vm", "retries": 0, "queue": "celery", "task_id": "x"}`,
			want: &ResultMeta{TaskID: "x", Status: StateSuccess, Result: json.Number("7"), Children: []any{}, GroupID: "g", ParentID: "p", Name: "cap.add",
				Args: []any{json.Number("2"), json.Number("5")}, Kwargs: map[string]any{}, Worker: "w4@vm", Retries: new(int), Queue: "celery"}},
		{name: "not json", raw: `oops`, wantField: "meta"},
		{name: "no status", raw: `{"result": 1, "task_id": "x"}`, wantField: "status"},
		{name: "status not a string", raw: `{"status": 1, "task_id": "x"}`, wantField: "status"},
		{name: "bad date_done", raw: `{"status": "SUCCESS", "date_done": "yesterday", "task_id": "x"}`, wantField: "date_done"},
		{name: "children not a list", raw: `{"status": "SUCCESS", "children": {}, "task_id": "x"}`, wantField: "children"},
		{name: "failure result not a dict", raw: `{"status": "FAILURE", "result": "boom", "task_id": "x"}`, wantField: "result"},
		{name: "failure without exc_type", raw: `{"status": "FAILURE", "result": {"exc_message": []}, "task_id": "x"}`, wantField: "result.exc_type"},
		{name: "unknown marker", raw: `{"status": "SUCCESS", "result": {"__type__": "frobnicate", "__value__": 1}, "task_id": "x"}`, wantField: "result"},
		{name: "retries not a number", raw: `{"status": "SUCCESS", "retries": "two", "task_id": "x"}`, wantField: "retries"},
	}
	b, r := newTestBackend(t, BackendConfig{})
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.Do(resultDB, "DEL", "celery-task-meta-x")
			if tt.raw != "" {
				r.Do(resultDB, "SET", "celery-task-meta-x", tt.raw)
			}
			got, err := b.GetMeta(ctx, "x")
			if tt.wantField != "" {
				var de *DecodeError
				if !errors.As(err, &de) || de.Field != tt.wantField || !errors.Is(err, ErrDecode) {
					t.Fatalf("err = %v, want a DecodeError for field %q", err, tt.wantField)
				}
				if !strings.Contains(err.Error(), "task x") {
					t.Errorf("error does not name the task: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.FilterPath(func(p cmp.Path) bool { return p.String() == "Raw" }, cmp.Ignore())); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if tt.raw != "" && string(got.Raw) != tt.raw {
				t.Errorf("Raw = %s", got.Raw)
			}
		})
	}
}

// resultVectors are stored values in the shapes Celery writes (facts A.8), fuzz seeds.
var resultVectors = []string{
	`{"status": "SUCCESS", "result": 5, "traceback": null, "children": [], "date_done": "2026-11-26T01:01:48.086420", "task_id": "aaaaaaaa-0000-0000-0000-000000000001"}`,
	`{"status": "SUCCESS", "result": 5, "traceback": null, "children": [], "date_done": "2026-11-26T01:09:03.219363+00:00", "task_id": "aaaaaaaa-0000-0000-0000-000000000001"}`,
	`{"status": "FAILURE", "result": {"exc_type": "MyError", "exc_message": ["boom"], "exc_module": "tasks"}, "traceback": "Traceback (most recent call last):\ntasks.MyError: boom\n", "children": [], "date_done": "2026-11-26T01:01:48.099426", "task_id": "aaaaaaaa-0000-0000-0000-000000000002"}`,
	`{"status": "RETRY", "result": {"exc_type": "MyError", "exc_message": ["try again 0"], "exc_module": "tasks"}, "traceback": "Retry", "children": [[["aaaaaaaa-0000-0000-0000-000000000004", null], null]], "date_done": null, "task_id": "aaaaaaaa-0000-0000-0000-000000000004"}`,
	`{"status": "STARTED", "result": {"pid": 13391, "hostname": "w1@vm"}, "traceback": null, "children": [], "date_done": null, "task_id": "x"}`,
	`{"status": "REVOKED", "result": {"exc_type": "TaskRevokedError", "exc_message": ["expired"], "exc_module": "celery.exceptions"}, "traceback": null, "children": [], "date_done": "2026-11-26T01:01:48", "task_id": "x"}`,
	`{"status": "SUCCESS", "result": 7, "traceback": null, "children": [], "date_done": "2026-11-26T01:01:48", "name": "cap.add", "args": [2, 5], "kwargs": {}, "worker": "w4@vm", "retries": 0, "queue": "celery", "task_id": "x"}`,
	`{"status": "SUCCESS", "result": [{"__type__": "datetime", "__value__": "2030-01-02T03:04:05+00:00"}, {"__type__": "decimal", "__value__": "1.5"}], "task_id": "x"}`,
}

// FuzzDecodeResultMeta: decoding never panics, and whatever decodes re-encodes and decodes to the
// same meta.
func FuzzDecodeResultMeta(f *testing.F) {
	for _, v := range resultVectors {
		f.Add([]byte(v))
	}
	b, err := NewBackend(&redis.Pool{}, BackendConfig{PeerVersion: Celery55, ResultExtended: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := b.decodeMeta("x", raw)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error is not a DecodeError: %v", err)
			}
			return
		}
		if m.Status == "" {
			return // "status": "" cannot be stored again
		}
		enc, err := b.encodeMeta(*m)
		if err != nil {
			if errors.Is(err, ErrEncode) {
				return // e.g. a huge json.Number the encoder rejects
			}
			t.Fatalf("re-encode %s: %v", raw, err)
		}
		m2, err := b.decodeMeta("x", enc)
		if err != nil {
			t.Fatalf("decode of re-encoded %s: %v", enc, err)
		}
		norm := func(m *ResultMeta) *ResultMeta {
			c := *m
			c.Raw, c.DateDone = nil, nil
			if c.Children == nil {
				c.Children = []any{}
			}
			if c.Args == nil {
				c.Args = []any{}
			}
			if c.Kwargs == nil {
				c.Kwargs = map[string]any{}
			}
			return &c
		}
		if diff := cmp.Diff(norm(m), norm(m2), cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
			t.Errorf("round trip of %s via %s (-first +second):\n%s", raw, enc, diff)
		}
	})
}
