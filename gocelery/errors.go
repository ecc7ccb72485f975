package gocelery

import "errors"

// Errors callers can test with errors.Is. Every message starts with "gocelery:".
var (
	// ErrConfig: a client, broker or backend was built without what it needs (a nil pool, a nil
	// broker or backend).
	ErrConfig = errors.New("gocelery: invalid configuration")
	// ErrResultNotAvailable: the task has no stored state yet (Celery's PENDING).
	ErrResultNotAvailable = errors.New("gocelery: result not available")
	// ErrTaskFailed: the task ended in a state other than SUCCESS (FAILURE, REVOKED). The error
	// also wraps the *celerycompat.TaskError with the exception and traceback when there is one.
	ErrTaskFailed = errors.New("gocelery: task did not succeed")
	// ErrTimeout: AsyncResult.Get's timeout passed before the result was stored.
	ErrTimeout = errors.New("gocelery: timeout getting result")
	// ErrUnsupportedMessage: a message that is not a JSON Celery task in base64 UTF-8.
	ErrUnsupportedMessage = errors.New("gocelery: unsupported message")
	// ErrBadArguments: a task's arguments do not fit the registered function (count or type).
	// Python sees it as a TypeError.
	ErrBadArguments = errors.New("gocelery: task arguments do not match")
	// ErrNotRegistered: a task name no task is registered for.
	ErrNotRegistered = errors.New("gocelery: task not registered")
)
