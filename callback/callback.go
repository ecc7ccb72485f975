package callback

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"
)

// Callback is one callback as the receiver got it. It is what OnCallback sees and what a Store
// keeps.
type Callback struct {
	// EventID identifies the callback for dedupe: the body's "event_id", or, for senders that
	// send none (the original Python handler), EventID(TaskID, Status).
	EventID string `json:"event_id"`
	// TaskID is "task_id": the business id, or the Celery id when the task had none.
	TaskID string `json:"task_id"`
	// CeleryTaskID is "celery_task_id" (empty from the original Python sender).
	CeleryTaskID string `json:"celery_task_id,omitempty"`
	// TaskName is "task_name" (empty from the original Python sender).
	TaskName string `json:"task_name,omitempty"`
	// Status is "status".
	Status Status `json:"status"`
	// Result is "result" as raw JSON ("null" when absent).
	Result json.RawMessage `json:"result"`
	// Error is "error"; nil for JSON null or absent.
	Error *string `json:"error"`
	// Timestamp is "timestamp" as sent: RFC 3339 from this package's sender, "%Y-%m-%d %H:%M:%S"
	// local time from the original Python one.
	Timestamp string `json:"timestamp,omitempty"`
	// Attempt is "attempt", the sender's delivery attempt (0 when not sent).
	Attempt int `json:"attempt,omitempty"`
	// ReceivedAt is when the receiver accepted the request (its clock).
	ReceivedAt time.Time `json:"received_at"`
	// Body is the raw request body.
	Body json.RawMessage `json:"-"`
}

// ParseCallback validates a callback body and decodes it. body must be a JSON object with a
// non-empty string "task_id" and "status" "success" or "failed"; "event_id", "celery_task_id",
// "task_name", "error" and "timestamp" must be strings or null when present, and "attempt" a
// non-negative integer. Unknown fields are allowed. The error is a *PayloadError saying what is
// wrong. ReceivedAt is left zero.
func ParseCallback(body []byte) (Callback, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		if trimmed := bytes.TrimSpace(body); json.Valid(trimmed) {
			return Callback{}, &PayloadError{Reason: "body is JSON but not an object"}
		}
		return Callback{}, &PayloadError{Reason: "body is not JSON: " + err.Error()}
	}
	if fields == nil {
		return Callback{}, &PayloadError{Reason: "body is JSON but not an object"}
	}
	cb := Callback{Body: append(json.RawMessage(nil), body...), Result: json.RawMessage("null")}
	var status string
	for _, f := range []struct {
		name     string
		dst      *string
		required bool
	}{
		{"task_id", &cb.TaskID, true},
		{"status", &status, true},
		{"event_id", &cb.EventID, false},
		{"celery_task_id", &cb.CeleryTaskID, false},
		{"task_name", &cb.TaskName, false},
		{"timestamp", &cb.Timestamp, false},
	} {
		raw, ok := fields[f.name]
		if !ok || isNull(raw) {
			if f.required {
				return Callback{}, &PayloadError{Field: f.name, Reason: "is missing"}
			}
			continue
		}
		if err := decodeString(raw, f.dst); err != nil {
			return Callback{}, &PayloadError{Field: f.name, Reason: "must be a string"}
		}
	}
	switch {
	case cb.TaskID == "":
		return Callback{}, &PayloadError{Field: "task_id", Reason: "is empty"}
	case len(cb.TaskID) > maxIDLen:
		return Callback{}, &PayloadError{Field: "task_id", Reason: fmt.Sprintf("is longer than %d bytes", maxIDLen)}
	case len(cb.EventID) > maxIDLen:
		return Callback{}, &PayloadError{Field: "event_id", Reason: fmt.Sprintf("is longer than %d bytes", maxIDLen)}
	}
	cb.Status = Status(status)
	if !cb.Status.valid() {
		return Callback{}, &PayloadError{Field: "status", Reason: fmt.Sprintf("must be %q or %q, not %q", StatusSuccess, StatusFailed, status)}
	}
	if raw, ok := fields["error"]; ok && !isNull(raw) {
		var s string
		if err := decodeString(raw, &s); err != nil {
			return Callback{}, &PayloadError{Field: "error", Reason: "must be a string or null"}
		}
		cb.Error = &s
	}
	if raw, ok := fields["result"]; ok {
		cb.Result = append(json.RawMessage(nil), bytes.TrimSpace(raw)...)
	}
	if raw, ok := fields["attempt"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &cb.Attempt); err != nil || cb.Attempt < 0 {
			return Callback{}, &PayloadError{Field: "attempt", Reason: "must be a non-negative integer"}
		}
	}
	if cb.EventID == "" {
		cb.EventID = EventID(cb.TaskID, string(cb.Status))
	}
	return cb, nil
}

// isNull reports whether raw is the JSON literal null.
func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// decodeString decodes a JSON string value. raw comes from a document json.Unmarshal has already
// validated, so a string without escapes in valid UTF-8 can be taken as is; anything else goes
// through encoding/json (which also rejects non-strings).
func decodeString(raw json.RawMessage, dst *string) error {
	if n := len(raw); n >= 2 && raw[0] == '"' && raw[n-1] == '"' &&
		bytes.IndexByte(raw[1:n-1], '\\') < 0 && bytes.IndexByte(raw[1:n-1], '"') < 0 && utf8.Valid(raw[1:n-1]) {
		*dst = string(raw[1 : n-1])
		return nil
	}
	return json.Unmarshal(raw, dst)
}
