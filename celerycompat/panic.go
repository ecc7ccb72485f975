package celerycompat

import "fmt"

// PanicError is a panic recovered from a task handler, with its stack. The task fails with
// exception celerybridge.GoPanic whose traceback holds the Go stack; the worker goes on serving.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("handler panic: %v", e.Value) }

// HookPanicError is a panic recovered from a hook, with its stack. It is logged and counts as
// the hook having returned; it never reaches the task's result.
type HookPanicError struct {
	Value any
	Stack []byte
}

func (e *HookPanicError) Error() string { return fmt.Sprintf("hook panic: %v", e.Value) }
