package protocol

import "strings"

// NewTaskError returns the error a handler returns to fail its task with a named Python
// exception, as `raise ValueError("bad", 42)` would:
//
//	return nil, protocol.NewTaskError("ValueError", "bad", 42)          // builtins.ValueError
//	return nil, protocol.NewTaskError("myapp.errors.QuotaExceeded", 7) // a class of yours
//
// exc is the class name, qualified by its module when it is not a builtin: everything before
// the last dot is the module (exc_module), the rest the class (exc_type). args are the
// exception's args (exc_message) and must be JSON-encodable. The class must be an exception in
// a module the Python side has imported, or Python raises SecurityError while decoding the
// result (see ErrorToTaskError).
func NewTaskError(exc string, args ...any) *TaskError {
	module, typ := "builtins", exc
	if i := strings.LastIndexByte(exc, '.'); i >= 0 {
		module, typ = exc[:i], exc[i+1:]
	}
	if args == nil {
		args = []any{}
	}
	return &TaskError{ExcType: typ, ExcModule: module, ExcMessage: args}
}
