package celerycompat

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"time"
)

// Handler runs one Celery task. The context is cancelled when the task's soft time limit passes
// (context.Cause is ErrSoftTimeLimitExceeded; returning ctx.Err() or the cause fails the task
// with Python's SoftTimeLimitExceeded), when the hard limit passes, when it is revoked with
// terminate, and on hard shutdown. The returned value is stored as the task's result (it must
// be JSON-encodable); an error stores FAILURE (NewTaskError names the Python exception), unless
// it asks for a retry (Retry). A panic is recovered as a *PanicError and fails the task.
type Handler interface {
	ServeTask(ctx context.Context, req *Request) (any, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Request) (any, error)

// ServeTask calls f.
func (f HandlerFunc) ServeTask(ctx context.Context, req *Request) (any, error) { return f(ctx, req) }

// Middleware wraps a Handler (logging, metrics, tracing).
type Middleware func(Handler) Handler

// Request is what a handler knows about the task it runs (Celery's task.request).
type Request struct {
	ID         string
	Task       string
	Args       []any
	Kwargs     map[string]any
	Retries    int
	ETA        *time.Time
	Expires    *time.Time
	RootID     string
	ParentID   string
	GroupID    string
	GroupIndex *int
	// Headers are the custom headers (apply_async(headers=...)), raw JSON.
	Headers      map[string]json.RawMessage
	DeliveryInfo DeliveryInfo
	Queue        string
	Priority     int
	// Hostname is the node name of the worker running the task.
	Hostname string
	// Message is the full decoded message.
	Message *Message
}

func newRequest(m *Message, queue, hostname string) *Request {
	return &Request{
		ID: m.ID, Task: m.Task, Args: m.Args, Kwargs: m.Kwargs, Retries: m.Retries,
		ETA: m.ETA, Expires: m.Expires, RootID: m.RootID, ParentID: m.ParentID,
		GroupID: m.Group, GroupIndex: m.GroupIndex, Headers: m.ExtraHeaders,
		DeliveryInfo: m.DeliveryInfo, Queue: queue, Priority: m.Priority,
		Hostname: hostname, Message: m,
	}
}

// ArgumentError reports args/kwargs that do not fit a handler's parameters. It is stored as
// Python's TypeError, which is what Python raises for a call with the wrong arguments.
type ArgumentError struct {
	Task string
	Err  error
}

func (e *ArgumentError) Error() string {
	return fmt.Sprintf("%s: arguments do not match: %v", e.Task, e.Err)
}

func (e *ArgumentError) Unwrap() error { return e.Err }

// TaskError converts the error to Celery's exception format (a TypeError, as Python raises).
func (e *ArgumentError) TaskError() *TaskError {
	return &TaskError{ExcType: "TypeError", ExcModule: "builtins", ExcMessage: []any{e.Error()}}
}

// Bind decodes a task's args and kwargs into dst (a pointer to a struct). Positional args are
// matched to params in order, as Python matches them to the function's parameters; kwargs are
// matched by name; field names come from `json` tags. Python's call rules hold: an unknown
// name, a positional arg beyond params, a name given twice, a required field (one whose tag
// has neither omitempty nor omitzero) left without a value, or a value of the wrong type give
// an *ArgumentError, which Python sees as TypeError.
//
// Numbers keep Python's meaning: an integer binds exactly to int, int64, uint64 and *big.Int
// (an overflow is an error), and to float64 only when float64 holds it exactly; a float binds
// to float64. In an interface (a field of type any, or inside []any and map[string]any) an
// integer becomes an int64, or a *big.Int when it does not fit, and a float a float64, so
// int + int stays int.
func Bind(req *Request, params []string, dst any) error {
	if len(req.Args) > len(params) {
		return &ArgumentError{Task: req.Task, Err: fmt.Errorf("takes %d positional arguments but %d were given", len(params), len(req.Args))}
	}
	merged := make(map[string]any, len(req.Args)+len(req.Kwargs))
	for i, a := range req.Args {
		merged[params[i]] = a
	}
	for k, v := range req.Kwargs {
		if _, dup := merged[k]; dup {
			return &ArgumentError{Task: req.Task, Err: fmt.Errorf("got multiple values for argument %q", k)}
		}
		merged[k] = v
	}
	dv := reflect.ValueOf(dst)
	if dv.Kind() == reflect.Pointer && !dv.IsNil() && dv.Elem().Kind() == reflect.Struct {
		if err := checkArgs(req.Task, dv.Elem().Type(), params, merged); err != nil {
			return &ArgumentError{Task: req.Task, Err: err}
		}
	}
	raw, err := json.Marshal(merged)
	if err != nil {
		return &ArgumentError{Task: req.Task, Err: err}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(dst); err != nil {
		return &ArgumentError{Task: req.Task, Err: err}
	}
	if dv.Kind() == reflect.Pointer && !dv.IsNil() {
		normalizeAny(dv.Elem())
	}
	return nil
}

// Typed returns a Handler that binds args and kwargs into a T (see Bind) and calls fn with it.
// params names the positional parameters in order, as in the Python task's signature:
//
//	type processArgs struct {
//		TaskID string         `json:"task_id"`
//		Data   map[string]any `json:"data"`
//		Retry  bool           `json:"retry,omitempty"` // optional, as retry=False would be
//	}
//	w.Register("tasks.process_task", celerycompat.Typed(process, "task_id", "data"))
//
// Worker.Register refuses a T that is not a struct and a name in params that is not one of
// T's json field names.
func Typed[T any](fn func(ctx context.Context, req *Request, args T) (any, error), params ...string) Handler {
	return &typedHandler[T]{fn: fn, params: params}
}

// typedHandler is Typed's Handler.
type typedHandler[T any] struct {
	fn     func(ctx context.Context, req *Request, args T) (any, error)
	params []string
}

// ServeTask binds the arguments and calls the function.
func (h *typedHandler[T]) ServeTask(ctx context.Context, req *Request) (any, error) {
	var args T
	if err := Bind(req, h.params, &args); err != nil {
		return nil, err
	}
	return h.fn(ctx, req, args)
}

// checkBinding is called by Worker.Register.
func (h *typedHandler[T]) checkBinding() error {
	return checkParams(reflect.TypeFor[T](), h.params)
}
