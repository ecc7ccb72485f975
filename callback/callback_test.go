package callback

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func strp(s string) *string { return &s }

func TestParseCallback(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    Callback
		wantErr string // substring of the PayloadError; "" for success
	}{
		{
			name: "original Python sender: no event_id, derived from task_id and status",
			body: `{"task_id": "0d9793a1", "status": "success", "result": {"a": 1}, "error": null, "timestamp": "2025-12-19 12:44:01"}`,
			want: Callback{EventID: EventID("0d9793a1", "success"), TaskID: "0d9793a1", Status: StatusSuccess,
				Result: json.RawMessage(`{"a": 1}`), Timestamp: "2025-12-19 12:44:01"},
		},
		{
			name: "this package's sender",
			body: `{"task_id":"b","status":"failed","result":null,"error":"boom","timestamp":"2025-12-19T12:44:01+08:00",` +
				`"celery_task_id":"c","task_name":"tasks.x","event_id":"e1","attempt":2,"extra":[1]}`,
			want: Callback{EventID: "e1", TaskID: "b", CeleryTaskID: "c", TaskName: "tasks.x", Status: StatusFailed,
				Result: json.RawMessage(`null`), Error: strp("boom"), Timestamp: "2025-12-19T12:44:01+08:00", Attempt: 2},
		},
		{
			name: "minimal",
			body: `{"task_id":"t","status":"failed"}`,
			want: Callback{EventID: EventID("t", "failed"), TaskID: "t", Status: StatusFailed, Result: json.RawMessage(`null`)},
		},
		{name: "not JSON", body: `task_id=1`, wantErr: "body is not JSON"},
		{name: "empty body", body: ``, wantErr: "body is not JSON"},
		{name: "truncated", body: `{"task_id":"t"`, wantErr: "body is not JSON"},
		{name: "array", body: `[{"task_id":"t","status":"success"}]`, wantErr: "not an object"},
		{name: "string", body: `"hello"`, wantErr: "not an object"},
		{name: "null", body: `null`, wantErr: "not an object"},
		{name: "missing task_id", body: `{"status":"success"}`, wantErr: "task_id is missing"},
		{name: "null task_id", body: `{"task_id":null,"status":"success"}`, wantErr: "task_id is missing"},
		{name: "empty task_id", body: `{"task_id":"","status":"success"}`, wantErr: "task_id is empty"},
		{name: "numeric task_id", body: `{"task_id":7,"status":"success"}`, wantErr: "task_id must be a string"},
		{name: "missing status", body: `{"task_id":"t"}`, wantErr: "status is missing"},
		{name: "bad status", body: `{"task_id":"t","status":"SUCCESS"}`, wantErr: `status must be "success" or "failed", not "SUCCESS"`},
		{name: "error not a string", body: `{"task_id":"t","status":"failed","error":{"x":1}}`, wantErr: "error must be a string or null"},
		{name: "negative attempt", body: `{"task_id":"t","status":"failed","attempt":-1}`, wantErr: "attempt must be a non-negative integer"},
		{name: "event_id not a string", body: `{"task_id":"t","status":"failed","event_id":5}`, wantErr: "event_id must be a string"},
		{name: "task_id too long", body: `{"task_id":"` + strings.Repeat("x", 256) + `","status":"failed"}`, wantErr: "task_id is longer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCallback([]byte(tt.body))
			if tt.wantErr != "" {
				var pe *PayloadError
				if !errors.As(err, &pe) || !errors.Is(err, ErrInvalidPayload) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseCallback error = %v, want a PayloadError containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCallback: %v", err)
			}
			if string(got.Body) != tt.body {
				t.Errorf("Body = %s, want the raw body", got.Body)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(Callback{}, "Body")); diff != "" {
				t.Errorf("ParseCallback (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzParseCallback: never panics; what it accepts has a task id, a known status and an event
// id, and re-parsing the same body gives the same callback.
func FuzzParseCallback(f *testing.F) {
	for _, seed := range []string{
		`{"task_id": "0d9793a1", "status": "success", "result": {"a": 1}, "error": null, "timestamp": "2025-12-19 12:44:01"}`,
		`{"task_id":"b","status":"failed","result":null,"error":"boom","event_id":"e1","attempt":2}`,
		`[]`, `null`, `{"task_id":7}`, `{"task_id":"t","status":"failed","attempt":1e400}`, "\xff",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		cb, err := ParseCallback(body)
		if err != nil {
			if !errors.Is(err, ErrInvalidPayload) {
				t.Fatalf("error %v does not wrap ErrInvalidPayload", err)
			}
			return
		}
		if cb.TaskID == "" || cb.EventID == "" || !cb.Status.valid() || !json.Valid(cb.Result) {
			t.Fatalf("accepted an invalid callback: %+v", cb)
		}
		again, err := ParseCallback(cb.Body)
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if diff := cmp.Diff(cb, again); diff != "" {
			t.Fatalf("re-parse differs:\n%s", diff)
		}
	})
}

func BenchmarkParseCallback(b *testing.B) {
	body := []byte(`{"task_id":"biz-000123","status":"success","result":{"task_id":"biz-000123","status":"completed","processed_data":{"n":1,"s":"hello"},"timestamp":"2025-12-19 12:44:01"},"error":null,"timestamp":"2025-12-19T12:44:01.123456789+08:00","celery_task_id":"0d9793a1-5b1c-4c43-9d0f-2a7c6f1e8e11","task_name":"tasks.process_task","event_id":"5f0c2b3e9a7d4e1f8c6b5a4d3e2f1a0b","attempt":1}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseCallback(body); err != nil {
			b.Fatal(err)
		}
	}
}
