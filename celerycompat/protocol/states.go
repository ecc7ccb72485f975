package protocol

// State is a Celery task state as stored in the result backend's "status" field
// (celery/states.py). Custom states (update_state(state="PROGRESS")) are valid too: they are
// neither ready nor exceptions.
type State string

// The built-in Celery states.
const (
	StatePending  State = "PENDING"  // unknown or not yet run; never stored, a missing key means it
	StateReceived State = "RECEIVED" // received by a worker (events only)
	StateStarted  State = "STARTED"  // task_track_started: result is {"pid", "hostname"}
	StateSuccess  State = "SUCCESS"  // finished; result is the return value
	StateFailure  State = "FAILURE"  // raised; result is an exception dict
	StateRetry    State = "RETRY"    // will be retried; result is the exception dict (or null)
	StateRevoked  State = "REVOKED"  // revoked or expired; result is a TaskRevokedError dict
	StateRejected State = "REJECTED" // rejected by the worker
	StateIgnored  State = "IGNORED"  // the task raised Ignore
)

// Ready reports whether s is final (Celery's READY_STATES: SUCCESS, FAILURE, REVOKED). A result
// in a ready state gets a date_done, and AsyncResult.Get returns once it sees one.
func (s State) Ready() bool {
	return s == StateSuccess || s == StateFailure || s == StateRevoked
}

// Propagates reports whether Get turns s into an error (PROPAGATE_STATES: FAILURE, REVOKED).
func (s State) Propagates() bool { return s == StateFailure || s == StateRevoked }

// IsException reports whether the stored result of s is an exception dict (EXCEPTION_STATES:
// RETRY, FAILURE, REVOKED).
func (s State) IsException() bool { return s == StateRetry || s.Propagates() }

func (s State) String() string { return string(s) }

// Revocation reasons, the exc_message Celery stores in a TaskRevokedError.
const (
	RevokedReasonRevoked    = "revoked"
	RevokedReasonExpired    = "expired"
	RevokedReasonTerminated = "terminated"
)
