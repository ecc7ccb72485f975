package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The result backend's format: the JSON value Celery stores under celery-task-meta-<id> and
// publishes on that key's channel.

// ResultMeta is one task's stored result (celery-task-meta-<id>), decoded.
type ResultMeta struct {
	TaskID string
	Status State
	// Result is the return value (SUCCESS), the STARTED info, a custom state's meta, or for
	// RETRY/FAILURE/REVOKED a *TaskError (nil when a RETRY stored no exception). On write a
	// *TaskError or error is stored as an exception dict and a json.RawMessage verbatim.
	Result    any
	Traceback string
	// Children are result tuples (see ResultTuple); nil is written as [].
	Children []any
	// DateDone is set for ready states; on write nil means now.
	DateDone *time.Time
	GroupID  string
	ParentID string
	// Extended fields (result_extended=True).
	Name    string
	Args    []any
	Kwargs  map[string]any
	Worker  string
	Retries *int
	Queue   string
	// Raw is the stored JSON (set by reads).
	Raw []byte
}

// ResultFormat is how a result backend writes results for its peers and reads theirs.
type ResultFormat struct {
	// Codec encodes and decodes result values.
	Codec Codec
	// PeerVersion is the oldest Celery that reads the results; it picks the date_done format.
	PeerVersion Version
	// ResultExtended writes name, args, kwargs, worker, retries and queue (result_extended=True).
	ResultExtended bool
	// Timezone is the app timezone of date_done when PeerVersion >= 5.5; nil means UTC.
	Timezone *time.Location
}

// EncodeMeta renders meta in the byte layout Celery writes: Python's json separators and key
// order status, result, traceback, children, date_done, [group_id], [parent_id], [name, args,
// kwargs, worker, retries, queue], task_id. now is the date_done of a ready state without DateDone.
func (f ResultFormat) EncodeMeta(m ResultMeta, now time.Time) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(`{"status": `)
	WritePyString(&buf, string(m.Status))
	buf.WriteString(`, "result": `)
	res, err := f.EncodeResult(m.Result)
	if err != nil {
		return nil, &metaFieldError{"result", err}
	}
	buf.Write(res)
	buf.WriteString(`, "traceback": `)
	WritePyStringOrNull(&buf, m.Traceback)
	children := m.Children
	if children == nil {
		children = []any{}
	}
	ch, err := f.Codec.MarshalValue(children)
	if err != nil {
		return nil, &metaFieldError{"children", err}
	}
	buf.WriteString(`, "children": `)
	buf.Write(ch)
	buf.WriteString(`, "date_done": `)
	if m.Status.Ready() {
		t := now
		if m.DateDone != nil {
			t = *m.DateDone
		}
		WritePyString(&buf, f.FormatDateDone(t))
	} else {
		buf.WriteString("null")
	}
	if m.GroupID != "" {
		buf.WriteString(`, "group_id": `)
		WritePyString(&buf, m.GroupID)
	}
	if m.ParentID != "" {
		buf.WriteString(`, "parent_id": `)
		WritePyString(&buf, m.ParentID)
	}
	if f.ResultExtended {
		if err := f.encodeExtended(&buf, m); err != nil {
			return nil, err
		}
	}
	buf.WriteString(`, "task_id": `)
	WritePyString(&buf, m.TaskID)
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

func (f ResultFormat) encodeExtended(buf *bytes.Buffer, m ResultMeta) error {
	buf.WriteString(`, "name": `)
	WritePyStringOrNull(buf, m.Name)
	var args any = m.Args
	if m.Args == nil {
		args = []any{}
	}
	var kwargs any = m.Kwargs
	if m.Kwargs == nil {
		kwargs = map[string]any{}
	}
	for _, fld := range []struct {
		name string
		v    any
	}{{"args", args}, {"kwargs", kwargs}} {
		enc, err := f.Codec.MarshalValue(fld.v)
		if err != nil {
			return &metaFieldError{fld.name, err}
		}
		buf.WriteString(`, "` + fld.name + `": `)
		buf.Write(enc)
	}
	buf.WriteString(`, "worker": `)
	WritePyStringOrNull(buf, m.Worker)
	buf.WriteString(`, "retries": `)
	if m.Retries != nil {
		buf.WriteString(strconv.Itoa(*m.Retries))
	} else {
		buf.WriteString("null")
	}
	buf.WriteString(`, "queue": `)
	WritePyStringOrNull(buf, m.Queue)
	return nil
}

// EncodeResult renders a result value: a json.RawMessage verbatim, a *TaskError or error as
// Celery's exception dict, anything else with the codec.
func (f ResultFormat) EncodeResult(v any) ([]byte, error) {
	switch r := v.(type) {
	case json.RawMessage:
		if !json.Valid(r) {
			return nil, fmt.Errorf("%w: invalid json.RawMessage", ErrEncode)
		}
		return r, nil
	case *TaskError:
		if r == nil {
			return []byte("null"), nil
		}
		return f.Codec.MarshalTaskError(r)
	case error:
		return f.Codec.MarshalTaskError(ErrorToTaskError(r))
	}
	return f.Codec.MarshalValue(v)
}

// FormatDateDone writes date_done as the peer's Celery does: naive UTC isoformat before 5.4,
// UTC with "+00:00" in 5.4, the app timezone's offset from 5.5.
func (f ResultFormat) FormatDateDone(t time.Time) string {
	v := f.PeerVersion
	switch {
	case !v.AtLeast(Celery54):
		s := PyISOFormat(t.UTC())
		s = strings.TrimSuffix(strings.TrimSuffix(s, "+00:00"), "Z")
		return s
	case !v.AtLeast(Celery55) || f.Timezone == nil:
		return PyISOFormat(t.UTC())
	default:
		return PyISOFormat(t.In(f.Timezone))
	}
}

// metaFieldError names the meta field a value failed to encode in.
type metaFieldError struct {
	field string
	err   error
}

func (e *metaFieldError) Error() string { return "encode " + e.field + ": " + e.err.Error() }
func (e *metaFieldError) Unwrap() error { return e.err }

// DecodeMeta decodes a stored or published result value of task id. An undecodable field gives
// an error wrapping a *DecodeError that names it.
func (f ResultFormat) DecodeMeta(id string, raw []byte) (*ResultMeta, error) {
	fail := func(field string, err error) error {
		var inner *DecodeError
		if errors.As(err, &inner) && inner.Field == "value" {
			err = inner.Err // UnmarshalValue's own wrapper: name our field instead
		}
		return fmt.Errorf("protocol: result of task %s: %w", id, &DecodeError{Field: field, Err: err})
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, fail("meta", err)
	}
	m := &ResultMeta{TaskID: id, Raw: raw}
	var err error
	str := func(field string, dst *string) {
		if err != nil {
			return
		}
		if v, ok := top[field]; ok && !isJSONNull(v) {
			if e := json.Unmarshal(v, dst); e != nil {
				err = fail(field, e)
			}
		}
	}
	var status string
	if _, ok := top["status"]; !ok {
		return nil, fail("status", errors.New("missing"))
	}
	str("status", &status)
	m.Status = State(status)
	str("traceback", &m.Traceback)
	str("group_id", &m.GroupID)
	str("parent_id", &m.ParentID)
	str("name", &m.Name)
	str("worker", &m.Worker)
	str("queue", &m.Queue)
	str("task_id", &m.TaskID)
	if err != nil {
		return nil, err
	}
	if v, ok := top["result"]; ok {
		if m.Result, err = f.Codec.UnmarshalValue(v); err != nil {
			return nil, fail("result", err)
		}
	}
	if m.Status.IsException() && m.Result != nil {
		if m.Result, err = TaskErrorFromValue(m.Result, m.Status, m.Traceback, "result"); err != nil {
			return nil, fmt.Errorf("protocol: result of task %s: %w", id, err)
		}
	}
	if v, ok := top["date_done"]; ok && !isJSONNull(v) {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, fail("date_done", err)
		}
		t, err := ParsePyTime(s)
		if err != nil {
			return nil, fail("date_done", err)
		}
		m.DateDone = &t
	}
	for _, fld := range []struct {
		name string
		dst  any
	}{{"children", &m.Children}, {"args", &m.Args}, {"kwargs", &m.Kwargs}} {
		v, ok := top[fld.name]
		if !ok || isJSONNull(v) {
			continue
		}
		val, err := f.Codec.UnmarshalValue(v)
		if err != nil {
			return nil, fail(fld.name, err)
		}
		if err := assignDecoded(fld.dst, val); err != nil {
			return nil, fail(fld.name, err)
		}
	}
	if v, ok := top["retries"]; ok && !isJSONNull(v) {
		var n int
		if err := json.Unmarshal(v, &n); err != nil {
			return nil, fail("retries", err)
		}
		m.Retries = &n
	}
	return m, nil
}

func assignDecoded(dst, val any) error {
	switch d := dst.(type) {
	case *[]any:
		l, ok := val.([]any)
		if !ok {
			return fmt.Errorf("%T is not a list", val)
		}
		*d = l
	case *map[string]any:
		o, ok := val.(map[string]any)
		if !ok {
			return fmt.Errorf("%T is not an object", val)
		}
		*d = o
	}
	return nil
}

func isJSONNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }
