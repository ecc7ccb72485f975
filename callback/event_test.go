package callback

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestEventIDStable(t *testing.T) {
	// Golden values computed independently with Python's hashlib:
	// hashlib.sha256(f"{celery_id}:{status}".encode()).hexdigest()[:32]
	tests := []struct {
		celeryID, status, want string
	}{
		{"c3c002ad-73b9-43c6-8393-21a5ad38ab10", "success", "667e47466e182eb8963ba4cfdf1d1105"},
		{"c3c002ad-73b9-43c6-8393-21a5ad38ab10", "failed", "c79bf9793b59ecb360c767b4f6e4605d"},
		{"", "success", "a2f627361d423483f89134f6eb280081"},
	}
	for _, tt := range tests {
		t.Run(tt.celeryID+":"+tt.status, func(t *testing.T) {
			for range 3 { // derived, never random
				if got := EventID(tt.celeryID, tt.status); got != tt.want {
					t.Fatalf("EventID = %s, want %s", got, tt.want)
				}
			}
			ev := Event{CeleryTaskID: tt.celeryID, Status: Status(tt.status)}
			if got := ev.ID(); got != tt.want {
				t.Errorf("Event.ID = %s, want %s", got, tt.want)
			}
		})
	}
	if EventID("a", "success") == EventID("a", "failed") {
		t.Error("success and failure of one task share an event id")
	}
}

func TestEventPayload(t *testing.T) {
	now := time.Date(2025, 12, 19, 12, 44, 1, 108000000, time.FixedZone("CST", 8*3600))
	id := "c3c002ad-73b9-43c6-8393-21a5ad38ab10"
	tests := []struct {
		name    string
		ev      Event
		want    map[string]any
		wantErr error
	}{
		{
			name: "success with business id",
			ev: Event{CeleryTaskID: id, TaskID: "0d9793a1", TaskName: "tasks.process_task", Status: StatusSuccess,
				Result: map[string]any{"status": "success", "process_time": 1.0}},
			want: map[string]any{
				"task_id": "0d9793a1", "status": "success",
				"result": map[string]any{"status": "success", "process_time": 1.0},
				"error":  nil, "timestamp": "2025-12-19T12:44:01.108+08:00",
				"celery_task_id": id, "task_name": "tasks.process_task", "event_id": EventID("0d9793a1", "success"),
			},
		},
		{
			name: "failure without business id: task_id is the Celery id, result null",
			ev:   Event{CeleryTaskID: id, Status: StatusFailed, Error: "boom", Time: now.Add(-time.Second)},
			want: map[string]any{
				"task_id": id, "status": "failed", "result": nil, "error": "boom",
				"timestamp": "2025-12-19T12:44:00.108+08:00", "celery_task_id": id, "task_name": "",
				"event_id": EventID(id, "failed"),
			},
		},
		{
			name: "failure with empty message still sends a string",
			ev:   Event{CeleryTaskID: id, Status: StatusFailed},
			want: map[string]any{
				"task_id": id, "status": "failed", "result": nil, "error": "",
				"timestamp": "2025-12-19T12:44:01.108+08:00", "celery_task_id": id, "task_name": "",
				"event_id": EventID(id, "failed"),
			},
		},
		{
			name: "raw JSON result passes through",
			ev:   Event{CeleryTaskID: id, Status: StatusSuccess, Result: json.RawMessage(`[1,"two",{}]`)},
			want: map[string]any{
				"task_id": id, "status": "success", "result": []any{1.0, "two", map[string]any{}}, "error": nil,
				"timestamp": "2025-12-19T12:44:01.108+08:00", "celery_task_id": id, "task_name": "",
				"event_id": EventID(id, "success"),
			},
		},
		{name: "no celery id", ev: Event{Status: StatusSuccess}, wantErr: ErrInvalidEvent},
		{name: "unknown status", ev: Event{CeleryTaskID: id, Status: "SUCCESS"}, wantErr: ErrInvalidEvent},
		{name: "result not encodable", ev: Event{CeleryTaskID: id, Status: StatusSuccess, Result: make(chan int)}, wantErr: ErrInvalidEvent},
		{name: "id too long", ev: Event{CeleryTaskID: string(make([]byte, 300)), Status: StatusSuccess}, wantErr: ErrInvalidEvent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, err := tt.ev.payload(now)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("payload error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			var got map[string]any
			if err := json.Unmarshal(withAttempt(body, 3), &got); err != nil {
				t.Fatalf("payload with attempt is not JSON: %v\n%s", err, body)
			}
			tt.want["attempt"] = 3.0
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("payload (-want +got):\n%s", diff)
			}
		})
	}
}
