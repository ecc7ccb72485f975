package callback

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
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
	return parseCallback(append([]byte(nil), body...))
}

// parseCallback is ParseCallback keeping body as Callback.Body: the receiver owns the bytes it
// read, so it need not copy them.
func parseCallback(body []byte) (Callback, error) {
	// One decoding pass into typed fields: a map of raw values cost three times as much, and
	// the receiver parses every request. (encoding/json matches keys case-insensitively.)
	var w struct {
		TaskID       *string         `json:"task_id"`
		Status       *string         `json:"status"`
		EventID      *string         `json:"event_id"`
		CeleryTaskID *string         `json:"celery_task_id"`
		TaskName     *string         `json:"task_name"`
		Timestamp    *string         `json:"timestamp"`
		Error        *string         `json:"error"`
		Result       json.RawMessage `json:"result"`
		Attempt      *int            `json:"attempt"`
	}
	var isObject bool
	if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && trimmed[0] == '{' {
		isObject = true
	}
	if err := json.Unmarshal(body, &w); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case !json.Valid(body):
			return Callback{}, &PayloadError{Reason: "body is not JSON: " + err.Error()}
		case !isObject:
			return Callback{}, &PayloadError{Reason: "body is JSON but not an object"}
		case errors.As(err, &te) && te.Field == "error":
			return Callback{}, &PayloadError{Field: te.Field, Reason: "must be a string or null"}
		case errors.As(err, &te) && te.Field == "attempt":
			return Callback{}, &PayloadError{Field: te.Field, Reason: "must be a non-negative integer"}
		case errors.As(err, &te) && te.Field != "":
			return Callback{}, &PayloadError{Field: te.Field, Reason: "must be a string"}
		default:
			return Callback{}, &PayloadError{Reason: "invalid callback: " + err.Error()}
		}
	}
	if !isObject {
		return Callback{}, &PayloadError{Reason: "body is JSON but not an object"}
	}
	cb := Callback{Body: body, Result: json.RawMessage("null"), Error: w.Error}
	switch {
	case w.TaskID == nil:
		return Callback{}, &PayloadError{Field: "task_id", Reason: "is missing"}
	case w.Status == nil:
		return Callback{}, &PayloadError{Field: "status", Reason: "is missing"}
	case *w.TaskID == "":
		return Callback{}, &PayloadError{Field: "task_id", Reason: "is empty"}
	case len(*w.TaskID) > maxIDLen:
		return Callback{}, &PayloadError{Field: "task_id", Reason: fmt.Sprintf("is longer than %d bytes", maxIDLen)}
	case w.EventID != nil && len(*w.EventID) > maxIDLen:
		return Callback{}, &PayloadError{Field: "event_id", Reason: fmt.Sprintf("is longer than %d bytes", maxIDLen)}
	case w.Attempt != nil && *w.Attempt < 0:
		return Callback{}, &PayloadError{Field: "attempt", Reason: "must be a non-negative integer"}
	}
	cb.TaskID, cb.Status = *w.TaskID, Status(*w.Status)
	if !cb.Status.valid() {
		return Callback{}, &PayloadError{Field: "status", Reason: fmt.Sprintf("must be %q or %q, not %q", StatusSuccess, StatusFailed, *w.Status)}
	}
	for _, f := range []struct {
		src *string
		dst *string
	}{{w.EventID, &cb.EventID}, {w.CeleryTaskID, &cb.CeleryTaskID}, {w.TaskName, &cb.TaskName}, {w.Timestamp, &cb.Timestamp}} {
		if f.src != nil {
			*f.dst = *f.src
		}
	}
	if len(w.Result) > 0 {
		cb.Result = w.Result
	}
	if w.Attempt != nil {
		cb.Attempt = *w.Attempt
	}
	if cb.EventID == "" {
		cb.EventID = EventID(cb.TaskID, string(cb.Status))
	}
	return cb, nil
}
