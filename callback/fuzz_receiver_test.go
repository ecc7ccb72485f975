package callback

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// FuzzHandler: whatever the body, the receiver never panics, answers 200, 400 or 413 with a
// JSON body, and stores exactly the callbacks it answered 200 for (a repeat is a duplicate).
func FuzzHandler(f *testing.F) {
	for _, s := range []string{
		`{"task_id":"t1","status":"success","result":{"a":1},"error":null,"timestamp":"2025-12-19 12:44:01"}`,
		`{"task_id": "biz", "status": "failed", "result": null, "error": "boom", "timestamp": "2026-12-04 19:20:00"}`,
		`{"task_id":"t","status":"success","event_id":"e","attempt":3,"celery_task_id":"c","task_name":"x"}`,
		`{"task_id":"","status":"success"}`, `{"task_id":1}`, `[]`, `null`, `{"task_id":"t","status":"done"}`,
		`{"task_id":"t","status":"success","attempt":-1}`, `{"TASK_ID":"t","Status":"success"}`, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		store := NewMemoryStore()
		h, err := NewHandler(HandlerConfig{Store: store, MaxBodyBytes: 4096, Clock: func() time.Time { return time.Unix(1e9, 0) }})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			var rep reply
			if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil || rep.Code != rec.Code {
				t.Fatalf("answer %d is not the JSON reply: %v %q", rec.Code, err, rec.Body.Bytes())
			}
			st, _ := store.Stats(context.Background())
			switch rec.Code {
			case http.StatusOK:
				cb, err := ParseCallback(body)
				if err != nil || rep.EventID != cb.EventID || rep.Duplicate != (i == 1) || st.Unique != 1 {
					t.Fatalf("200 %+v for %q: parse %v, stats %+v", rep, body, err, st)
				}
			case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
				if st.Received != 0 {
					t.Fatalf("%d but stored: %+v", rec.Code, st)
				}
			default:
				t.Fatalf("answered %d %s", rec.Code, rec.Body.Bytes())
			}
		}
	})
}
