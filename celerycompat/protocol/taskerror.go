package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// The exception a plain Go error becomes in the result backend (see ErrorToTaskError).
const (
	// GoErrorType is the exc_type of a Go error that is not a *TaskError.
	GoErrorType = "GoError"
	// GoErrorModule is its exc_module. Python resolves exc_module through sys.modules; a name
	// with slashes can never be a loaded module, so Python always synthesizes an Exception
	// subclass named GoError (in celery.exceptions) instead of resolving some unrelated attribute
	// (which could raise SecurityError).
	GoErrorModule = "github.com/celerybridge/celerybridge"
)

// ErrorToTaskError converts a Go error into the exception Celery stores for a failed task.
//
//   - nil gives nil.
//   - The first *TaskError in the chain (errors.As order) is used as is, so a handler that returns
//     &TaskError{ExcModule: "builtins", ExcType: "ValueError", ExcMessage: []any{"bad", 42}}
//     makes Python's AsyncResult.get() raise a real ValueError('bad', 42). Only name a class that
//     really is an exception in a module the Python reader has loaded ("builtins",
//     "celery.exceptions", your tasks module): a name that resolves to anything else makes
//     Python raise SecurityError while decoding the result. An empty ExcType becomes GoError.
//   - An error with a TaskError() *TaskError method converts itself (whichever of the two comes
//     first in the chain wins): celerycompat's *ChordError becomes
//     celery.exceptions.ChordError with the message Python writes.
//   - Any other error becomes exc_type GoError, exc_module GoErrorModule, exc_message
//     [err.Error()]: Python raises a synthesized exception class whose __name__ is "GoError" and
//     whose args are (err.Error(),).
func ErrorToTaskError(err error) *TaskError {
	if err == nil {
		return nil
	}
	if te := findTaskError(err); te != nil {
		if te.ExcType == "" {
			c := *te
			c.ExcType = GoErrorType
			return &c
		}
		return te
	}
	return &TaskError{ExcType: GoErrorType, ExcModule: GoErrorModule, ExcMessage: []any{err.Error()}}
}

// findTaskError walks err's chain in errors.As order and returns the first *TaskError, or the
// conversion of the first error with a TaskError() *TaskError method, whichever comes first.
func findTaskError(err error) *TaskError {
	for err != nil {
		switch e := err.(type) {
		case *TaskError:
			return e
		case interface{ TaskError() *TaskError }:
			if te := e.TaskError(); te != nil {
				return te
			}
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if te := findTaskError(e); te != nil {
					return te
				}
			}
			return nil
		default:
			return nil
		}
	}
	return nil
}

// MarshalTaskError writes Celery's exception dict in Python's key order:
// {"exc_type": ..., "exc_message": [...], "exc_module": ...}; exc_module "" is written as null.
// te is written as given (ErrorToTaskError is where defaults are applied).
func (c Codec) MarshalTaskError(te *TaskError) ([]byte, error) {
	args := te.ExcMessage
	if args == nil {
		args = []any{}
	}
	msg, err := c.MarshalValue(args)
	if err != nil {
		// Like Celery's ensure_serializable: an argument that cannot be encoded becomes its repr.
		safe := make([]any, len(args))
		for i, a := range args {
			safe[i] = a
			if _, err := c.MarshalValue(a); err != nil {
				safe[i] = PyRepr(a)
			}
		}
		if msg, err = c.MarshalValue(safe); err != nil {
			return nil, fmt.Errorf("exc_message: %w", err)
		}
	}
	var b bytes.Buffer
	b.WriteString(`{"exc_type": `)
	WritePyString(&b, te.ExcType)
	b.WriteString(`, "exc_message": `)
	b.Write(msg)
	b.WriteString(`, "exc_module": `)
	WritePyStringOrNull(&b, te.ExcModule)
	b.WriteByte('}')
	return b.Bytes(), nil
}

// TaskErrorFromValue decodes an exception dict read from the backend (a decoded result value).
// exc_message may be a list (Celery 4+) or a single value (older writers), which becomes a
// one-element list. field names the value for DecodeError.
func TaskErrorFromValue(v any, state State, traceback, field string) (*TaskError, error) {
	d, ok := v.(map[string]any)
	if !ok {
		return nil, &DecodeError{Field: field, Err: fmt.Errorf("exception is %T, not an object", v)}
	}
	te := &TaskError{State: string(state), Traceback: traceback}
	typ, ok := d["exc_type"].(string)
	if !ok {
		return nil, &DecodeError{Field: field + ".exc_type", Err: errors.New("missing or not a string")}
	}
	te.ExcType = typ
	switch m := d["exc_module"].(type) {
	case nil:
	case string:
		te.ExcModule = m
	default:
		return nil, &DecodeError{Field: field + ".exc_module", Err: fmt.Errorf("%T is not a string", m)}
	}
	switch msg := d["exc_message"].(type) {
	case nil: // Python builds cls(None), or cls('') when the key is missing
		if _, present := d["exc_message"]; present {
			te.ExcMessage = []any{nil}
		} else {
			te.ExcMessage = []any{""}
		}
	case []any:
		te.ExcMessage = msg
	default:
		te.ExcMessage = []any{msg}
	}
	return te, nil
}

// PyExcRepr is repr() of the Python exception a TaskError decodes to: Name('a', 1).
func PyExcRepr(te *TaskError) string {
	name := te.ExcType
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		name = name[i+1:]
	}
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('(')
	for i, a := range te.ExcMessage {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(PyRepr(a))
	}
	b.WriteByte(')')
	return b.String()
}
