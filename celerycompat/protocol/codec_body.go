package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Task message bodies. Protocol 2: [args, kwargs, embed] (celery/app/amqp.py as_task_v2).
// Protocol 1: one object holding everything (as_task_v1); headers are then {}.
// Both are laid out here as generic values (PyDict keeps Python's key order), written by the JSON
// or msgpack writer, and decoded back from the generic values either decoder returns.

// sigDict lays out a signature the way celery.canvas.Signature (a dict) serializes.
func sigDict(s *Signature) PyDict {
	var args, kwargs, options, st any = s.Args, s.Kwargs, s.Options, nil
	if s.Args == nil {
		args = []any{}
	}
	if s.Kwargs == nil {
		kwargs = PyDict(nil)
	}
	if s.Options == nil {
		options = PyDict(nil)
	}
	if s.SubtaskType != "" {
		st = s.SubtaskType
	}
	return PyDict{{"task", s.Task}, {"args", args}, {"kwargs", kwargs}, {"options", options},
		{"subtask_type", st}, {"immutable", s.Immutable}}
}

// sigList lays out a list of signatures: nil stays null, an empty non-nil list is [].
func sigList(sigs []Signature) any {
	if sigs == nil {
		return nil
	}
	out := make([]any, len(sigs))
	for i := range sigs {
		out[i] = sigDict(&sigs[i])
	}
	return out
}

func sigOrNull(s *Signature) any {
	if s == nil {
		return nil
	}
	return sigDict(s)
}

func strOrNil(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func intPtrOrNil(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

// timeLimitValue writes a whole number of seconds as an int, as Python producers send them.
func timeLimitValue(f *float64) any {
	if f == nil {
		return nil
	}
	if *f == math.Trunc(*f) && math.Abs(*f) < 1e15 {
		return json.Number(strconv.FormatInt(int64(*f), 10))
	}
	return *f
}

func timeOrNil(t *time.Time) (any, error) {
	if t == nil {
		return nil, nil
	}
	if !pyTimeRangeOK(*t) {
		return nil, encodeErrorf("time %s is outside Python's datetime range", *t)
	}
	return PyISOFormat(*t), nil
}

// bodyLayout returns the body of m as generic values.
func bodyLayout(m *Message) (any, error) {
	var args, kwargs any = m.Args, m.Kwargs
	if m.Args == nil {
		args = []any{}
	}
	if m.Kwargs == nil {
		kwargs = PyDict(nil)
	}
	if m.Protocol != 1 {
		embed := PyDict{{"callbacks", sigList(m.Embed.Callbacks)}, {"errbacks", sigList(m.Embed.Errbacks)},
			{"chain", sigList(m.Embed.Chain)}, {"chord", sigOrNull(m.Embed.Chord)}}
		return []any{args, kwargs, embed}, nil
	}
	if len(m.Embed.Chain) > 0 {
		return nil, encodeErrorf("embed.chain: protocol 1 has no chain (link the next task as a callback)")
	}
	eta, err := timeOrNil(m.ETA)
	if err != nil {
		return nil, err
	}
	expires, err := timeOrNil(m.Expires)
	if err != nil {
		return nil, err
	}
	return PyDict{{"task", m.Task}, {"id", m.ID}, {"args", args}, {"kwargs", kwargs},
		{"group", strOrNil(m.Group)}, {"group_index", intPtrOrNil(m.GroupIndex)}, {"retries", m.Retries},
		{"eta", eta}, {"expires", expires}, {"utc", m.UTC},
		{"callbacks", sigList(m.Embed.Callbacks)}, {"errbacks", sigList(m.Embed.Errbacks)},
		{"timelimit", []any{timeLimitValue(m.TimeLimit.Hard), timeLimitValue(m.TimeLimit.Soft)}},
		{"taskset", strOrNil(m.Group)}, {"chord", sigOrNull(m.Embed.Chord)}}, nil
}

// Decoding from generic values. Field names follow the message: "body[2].chain[1].task".

// fieldErr names the field of a decode error. A *DecodeError already naming a full field is kept;
// one with an empty or relative field ("[1]", ".task") is put under field.
func fieldErr(field string, err error) error {
	var de *DecodeError
	if !errors.As(err, &de) {
		return &DecodeError{Field: strings.Clone(field), Err: err}
	}
	if de.Field == "" || de.Field[0] == '[' || de.Field[0] == '.' {
		return &DecodeError{Field: field + de.Field, Err: de.Err}
	}
	return err
}

// WantType is the cause of a DecodeError for a value of the wrong JSON kind: "got X, want want".
func WantType(want string, v any) error {
	return fmt.Errorf("got %s, want %s", jsonKind(v), want)
}

// StringOrNull reads a decoded value that must be a string or null ("" for null); field names it
// in the DecodeError otherwise.
func StringOrNull(v any, field string) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	}
	return "", &DecodeError{Field: field, Err: WantType("a string or null", v)}
}

func genInt(v any, field string) (*int, error) {
	if v == nil {
		return nil, nil
	}
	n, ok := v.(json.Number)
	if ok {
		if i, err := strconv.Atoi(string(n)); err == nil {
			return &i, nil
		}
	}
	return nil, &DecodeError{Field: field, Err: WantType("an integer or null", v)}
}

func genBool(v any, field string) (bool, error) {
	switch x := v.(type) {
	case nil:
		return false, nil
	case bool:
		return x, nil
	}
	return false, &DecodeError{Field: field, Err: WantType("a boolean or null", v)}
}

func genTime(v any, field string) (*time.Time, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case time.Time:
		return &x, nil
	case string:
		if x == "" {
			return nil, nil
		}
		t, err := parsePyTime(x)
		if err != nil {
			return nil, &DecodeError{Field: field, Err: err}
		}
		return &t, nil
	}
	return nil, &DecodeError{Field: field, Err: WantType("an ISO 8601 string or null", v)}
}

func genFloat(v any, field string) (*float64, error) {
	if v == nil {
		return nil, nil
	}
	if n, ok := v.(json.Number); ok {
		f, err := strconv.ParseFloat(string(n), 64)
		if err == nil || errors.Is(err, strconv.ErrRange) {
			return &f, nil
		}
	}
	return nil, &DecodeError{Field: field, Err: WantType("a number or null", v)}
}

func genTimeLimit(v any, field string) (TimeLimit, error) {
	if v == nil {
		return TimeLimit{}, nil
	}
	a, ok := v.([]any)
	if !ok || len(a) != 2 {
		return TimeLimit{}, &DecodeError{Field: field, Err: errors.New("want [hard, soft]")}
	}
	hard, err := genFloat(a[0], field+"[0]")
	if err != nil {
		return TimeLimit{}, err
	}
	soft, err := genFloat(a[1], field+"[1]")
	return TimeLimit{Hard: hard, Soft: soft}, err
}

func genMap(v any, field string) (map[string]any, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case map[string]any:
		return x, nil
	}
	return nil, &DecodeError{Field: field, Err: WantType("an object or null", v)}
}

func genList(v any, field string) ([]any, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case []any:
		return x, nil
	}
	return nil, &DecodeError{Field: field, Err: WantType("an array or null", v)}
}

// sigFrom decodes a signature dict; missing keys are zero, unknown keys are dropped.
func sigFrom(v any, field string) (Signature, error) {
	var s Signature
	d, ok := v.(map[string]any)
	if !ok {
		return s, &DecodeError{Field: field, Err: WantType("a signature object", v)}
	}
	var err error
	if s.Task, err = StringOrNull(d["task"], field+".task"); err != nil {
		return s, err
	}
	if s.Args, err = genList(d["args"], field+".args"); err != nil {
		return s, err
	}
	if s.Kwargs, err = genMap(d["kwargs"], field+".kwargs"); err != nil {
		return s, err
	}
	if s.Options, err = genMap(d["options"], field+".options"); err != nil {
		return s, err
	}
	if s.SubtaskType, err = StringOrNull(d["subtask_type"], field+".subtask_type"); err != nil {
		return s, err
	}
	s.Immutable, err = genBool(d["immutable"], field+".immutable")
	return s, err
}

func sigsFrom(v any, field string) ([]Signature, error) {
	if v == nil {
		return nil, nil
	}
	a, ok := v.([]any)
	if !ok {
		return nil, &DecodeError{Field: field, Err: WantType("a list of signatures or null", v)}
	}
	out := make([]Signature, len(a))
	for i, e := range a {
		s, err := sigFrom(e, field+"["+strconv.Itoa(i)+"]")
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

func sigPtrFrom(v any, field string) (*Signature, error) {
	if v == nil {
		return nil, nil
	}
	s, err := sigFrom(v, field)
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// decodeBody2 fills args, kwargs and embed from a protocol 2 body.
func decodeBody2(v any, m *Message) error {
	a, ok := v.([]any)
	if !ok {
		return &DecodeError{Field: "body", Err: WantType("a protocol 2 body [args, kwargs, embed]", v)}
	}
	if len(a) != 3 {
		return &DecodeError{Field: "body", Err: fmt.Errorf("protocol 2 body has %d elements, want 3 [args, kwargs, embed]", len(a))}
	}
	if m.Args, ok = a[0].([]any); !ok {
		return &DecodeError{Field: "body[0]", Err: WantType("an args array", a[0])}
	}
	if m.Kwargs, ok = a[1].(map[string]any); !ok {
		return &DecodeError{Field: "body[1]", Err: WantType("a kwargs object", a[1])}
	}
	if a[2] == nil {
		return nil
	}
	e, ok := a[2].(map[string]any)
	if !ok {
		return &DecodeError{Field: "body[2]", Err: WantType("an embed object or null", a[2])}
	}
	var err error
	if m.Embed.Callbacks, err = sigsFrom(e["callbacks"], "body[2].callbacks"); err != nil {
		return err
	}
	if m.Embed.Errbacks, err = sigsFrom(e["errbacks"], "body[2].errbacks"); err != nil {
		return err
	}
	if m.Embed.Chain, err = sigsFrom(e["chain"], "body[2].chain"); err != nil {
		return err
	}
	m.Embed.Chord, err = sigPtrFrom(e["chord"], "body[2].chord")
	return err
}

// decodeBody1 fills m from a protocol 1 body (celery/worker/strategy.py proto1_to_proto2).
func decodeBody1(v any, m *Message) error {
	b, ok := v.(map[string]any)
	if !ok {
		return &DecodeError{Field: "body", Err: WantType("a protocol 1 body object (headers have no task)", v)}
	}
	var err error
	if m.Task, err = StringOrNull(b["task"], "body.task"); err != nil {
		return err
	}
	if m.ID, err = StringOrNull(b["id"], "body.id"); err != nil {
		return err
	}
	if m.Args, err = genList(b["args"], "body.args"); err != nil {
		return err
	}
	if m.Kwargs, err = genMap(b["kwargs"], "body.kwargs"); err != nil {
		return err
	}
	if m.Group, err = StringOrNull(b["group"], "body.group"); err != nil {
		return err
	}
	if m.GroupIndex, err = genInt(b["group_index"], "body.group_index"); err != nil {
		return err
	}
	retries, err := genInt(b["retries"], "body.retries")
	if err != nil {
		return err
	}
	if retries != nil {
		m.Retries = *retries
	}
	if m.ETA, err = genTime(b["eta"], "body.eta"); err != nil {
		return err
	}
	if m.Expires, err = genTime(b["expires"], "body.expires"); err != nil {
		return err
	}
	m.UTC = true
	if u, ok := b["utc"]; ok && u != nil {
		if m.UTC, err = genBool(u, "body.utc"); err != nil {
			return err
		}
	}
	if m.Embed.Callbacks, err = sigsFrom(b["callbacks"], "body.callbacks"); err != nil {
		return err
	}
	if m.Embed.Errbacks, err = sigsFrom(b["errbacks"], "body.errbacks"); err != nil {
		return err
	}
	if m.TimeLimit, err = genTimeLimit(b["timelimit"], "body.timelimit"); err != nil {
		return err
	}
	taskset, err := StringOrNull(b["taskset"], "body.taskset")
	if err != nil {
		return err
	}
	if m.Group == "" {
		m.Group = taskset
	}
	m.Embed.Chord, err = sigPtrFrom(b["chord"], "body.chord")
	return err
}
