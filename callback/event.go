package callback

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Status is a task outcome as the callback payload spells it.
type Status string

// The two outcomes the original signal handlers report.
const (
	StatusSuccess Status = "success" // task_success
	StatusFailed  Status = "failed"  // task_failure
)

// valid reports whether s is one of the known outcomes.
func (s Status) valid() bool { return s == StatusSuccess || s == StatusFailed }

// eventIDLen is the number of hex digits of the SHA-256 kept in an event id (128 bits).
const eventIDLen = 32

// maxIDLen bounds task ids and event ids accepted by the outbox and the receiver.
const maxIDLen = 255

// EventID returns the id of the callback for one outcome of one task: the first 32 hex digits
// of SHA-256(taskID + ":" + status), where taskID is the callback's "task_id" (the business id,
// or the Celery id when the task has none). It is derived, never random, so a task that runs
// again after a crash produces the same id and the outbox and the receiver both dedupe it. It is
// derived from "task_id" rather than from the Celery id because "task_id" is all the original
// Python sender puts in its payload: the receiver derives the same id for a callback that
// carries none, so one outcome posted once by a Go worker and once by a Python worker (work
// restored after a crash runs on whichever kind takes it) is stored once.
func EventID(taskID, status string) string {
	sum := sha256.Sum256([]byte(taskID + ":" + status))
	return hex.EncodeToString(sum[:])[:eventIDLen]
}

// Event is one task outcome to be delivered as an HTTP callback. The worker hook builds it from
// the task request and the outcome and passes it to Outbox.Enqueue.
type Event struct {
	// CeleryTaskID is the Celery task id (request.id). Required.
	CeleryTaskID string
	// TaskID is the business id sent as "task_id": the task's kwargs["task_id"] when present.
	// Empty means CeleryTaskID, as in the original handler. With Status it determines the event
	// id.
	TaskID string
	// TaskName is the registered task name, e.g. "tasks.process_task". Optional.
	TaskName string
	// Status is StatusSuccess or StatusFailed.
	Status Status
	// Result is the task's return value, sent as "result". It must be JSON-encodable;
	// json.RawMessage is sent as is. nil is sent as null (the original sends null on failure).
	Result any
	// Error is the failure message (str(exception) in Python), sent as "error". For a success
	// with an empty Error, "error" is null, as in the original.
	Error string
	// Time is when the task finished, sent as "timestamp" in RFC 3339 with nanoseconds and zone.
	// Zero means the outbox clock at Enqueue.
	Time time.Time
	// URL is an optional per-event destination. Empty means the outbox's default URL. A non-empty
	// URL must match the default URL or the allow-list (OutboxConfig.AllowedURLs).
	URL string
}

// ID returns the event id: EventID of the "task_id" sent (TaskID, or CeleryTaskID when TaskID is
// empty) and Status.
func (e Event) ID() string { return EventID(e.wireTaskID(), string(e.Status)) }

// wireTaskID is the "task_id" sent: TaskID, or CeleryTaskID when it is empty.
func (e Event) wireTaskID() string {
	if e.TaskID != "" {
		return e.TaskID
	}
	return e.CeleryTaskID
}

// wirePayload is the JSON body sent to the receiver, without "attempt" (added per attempt). The
// first five fields are the original rig's, in its order.
type wirePayload struct {
	TaskID       string          `json:"task_id"`
	Status       Status          `json:"status"`
	Result       json.RawMessage `json:"result"`
	Error        *string         `json:"error"`
	Timestamp    string          `json:"timestamp"`
	CeleryTaskID string          `json:"celery_task_id"`
	TaskName     string          `json:"task_name"`
	EventID      string          `json:"event_id"`
}

// payload validates e and encodes its JSON body (without "attempt"), stamping now when e.Time is
// zero.
func (e Event) payload(now time.Time) ([]byte, error) {
	if e.CeleryTaskID == "" {
		return nil, fmt.Errorf("%w: CeleryTaskID is empty", ErrInvalidEvent)
	}
	if len(e.CeleryTaskID) > maxIDLen || len(e.TaskID) > maxIDLen {
		return nil, fmt.Errorf("%w: task %s: task id longer than %d bytes", ErrInvalidEvent, e.CeleryTaskID, maxIDLen)
	}
	if !e.Status.valid() {
		return nil, fmt.Errorf("%w: task %s: status %q is neither %q nor %q",
			ErrInvalidEvent, e.CeleryTaskID, e.Status, StatusSuccess, StatusFailed)
	}
	p := wirePayload{
		TaskID:       e.TaskID,
		Status:       e.Status,
		CeleryTaskID: e.CeleryTaskID,
		TaskName:     e.TaskName,
		EventID:      e.ID(),
	}
	if p.TaskID == "" {
		p.TaskID = e.CeleryTaskID
	}
	if e.Result != nil {
		raw, err := marshalRaw(e.Result)
		if err != nil {
			return nil, fmt.Errorf("%w: task %s: result is not JSON-encodable: %w", ErrInvalidEvent, e.CeleryTaskID, err)
		}
		p.Result = raw
	}
	if e.Error != "" || e.Status == StatusFailed {
		msg := e.Error
		p.Error = &msg
	}
	t := e.Time
	if t.IsZero() {
		t = now
	}
	p.Timestamp = t.Format(time.RFC3339Nano)
	body, err := marshalRaw(p)
	if err != nil {
		return nil, fmt.Errorf("%w: task %s: encode: %w", ErrInvalidEvent, e.CeleryTaskID, err)
	}
	return body, nil
}

// marshalRaw is json.Marshal without HTML escaping: '<', '>' and '&' are written as themselves,
// not as 6-byte \u003c escapes, so a callback is no larger than its content needs (a result
// full of '<' would otherwise grow sixfold and outgrow the receiver's body limit). The body
// is JSON sent to a JSON endpoint, never embedded in HTML, so the escaping protected nothing.
func marshalRaw(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// withAttempt returns the payload with "attempt" appended. payload is a JSON object as produced
// by json.Marshal (it ends in '}' and has at least one member), so appending keeps every other
// byte as stored.
func withAttempt(payload []byte, attempt int) []byte {
	out := make([]byte, 0, len(payload)+16)
	out = append(out, payload[:len(payload)-1]...)
	out = append(out, `,"attempt":`...)
	out = fmt.Appendf(out, "%d}", attempt)
	return out
}
