package protocol

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors of the wire format. Every error this package returns either is one of these,
// wraps one, or is one of the typed errors below; match with errors.Is and errors.As.
var (
	// ErrDecode marks a message, header, body or stored result that could not be decoded.
	ErrDecode = errors.New("protocol: decode")
	// ErrEncode marks a value that cannot be written for the configured peer (for example bytes
	// for a Celery 5.2 peer, which has no JSON marker for them).
	ErrEncode = errors.New("protocol: encode")
	// ErrUnsupportedContentType marks a serializer we refuse (pickle, YAML) or do not know.
	ErrUnsupportedContentType = errors.New("protocol: unsupported content type")
	// ErrUnsupportedCompression marks a "compression" header we cannot undo.
	ErrUnsupportedCompression = errors.New("protocol: unsupported compression")
	// ErrBodyTooLarge marks a body over the configured size limit.
	ErrBodyTooLarge = errors.New("protocol: body too large")
	// ErrInvalidConfig marks a config or option value (or a version string) out of range.
	ErrInvalidConfig = errors.New("celerycompat: invalid config")
)

// DecodeError says which part of a message or result could not be decoded, and why.
type DecodeError struct {
	Field string // dotted path, e.g. "headers.eta", "body[1]", "properties.delivery_info.exchange"
	Err   error  // the cause
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("protocol: decode %s: %v", e.Field, e.Err)
}

// Unwrap returns ErrDecode and the cause, so both errors.Is(err, ErrDecode) and errors.Is on the
// cause hold.
func (e *DecodeError) Unwrap() []error { return []error{ErrDecode, e.Err} }

// ContentTypeError names the content type (or compression) that was refused.
type ContentTypeError struct {
	ContentType string
	Reason      string
}

func (e *ContentTypeError) Error() string {
	return fmt.Sprintf("protocol: unsupported content type %q: %s", e.ContentType, e.Reason)
}

func (e *ContentTypeError) Unwrap() error { return ErrUnsupportedContentType }

// TaskError is a task failure in Celery's exception format: what a Python worker stores for a
// raised exception, and what a Go worker stores for a handler error. Python's AsyncResult.get()
// raises an exception class named ExcType (a real one when ExcModule.ExcType resolves, otherwise a
// synthesized one with that name).
type TaskError struct {
	ExcType    string // exception class name, e.g. "ValueError"
	ExcModule  string // Python module, e.g. "builtins"; "" is written as null
	ExcMessage []any  // exception args, e.g. ["bad", 42]
	Traceback  string
	// State is the stored state the error came from: FAILURE, RETRY or REVOKED ("" when built in Go).
	State string
}

func (e *TaskError) Error() string {
	var b strings.Builder
	if e.ExcModule != "" && e.ExcModule != "builtins" {
		b.WriteString(e.ExcModule)
		b.WriteByte('.')
	}
	b.WriteString(e.ExcType)
	if len(e.ExcMessage) > 0 {
		b.WriteString(": ")
		for i, a := range e.ExcMessage {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprint(&b, a)
		}
	}
	return b.String()
}

// Message returns the exception message the way Python's str(exc) shows one-argument exceptions.
func (e *TaskError) Message() string {
	if len(e.ExcMessage) == 1 {
		return fmt.Sprint(e.ExcMessage[0])
	}
	parts := make([]string, len(e.ExcMessage))
	for i, a := range e.ExcMessage {
		parts[i] = fmt.Sprint(a)
	}
	return strings.Join(parts, ", ")
}
