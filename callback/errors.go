package callback

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Every error this package returns either is one of these, wraps one, or is one
// of the typed errors below (which unwrap to one of these); match with errors.Is and errors.As.
var (
	// ErrInvalidConfig marks a config value out of range.
	ErrInvalidConfig = errors.New("callback: invalid config")
	// ErrInvalidEvent marks an Event that cannot be enqueued (missing Celery task id, unknown
	// status, a result that is not JSON-encodable, no destination URL).
	ErrInvalidEvent = errors.New("callback: invalid event")
	// ErrURLNotAllowed marks a destination URL that matches neither the default URL nor the
	// allow-list. See URLError for the URL and the reason.
	ErrURLNotAllowed = errors.New("callback: url not allowed")
	// ErrRedis marks a Redis failure while reading or writing the outbox.
	ErrRedis = errors.New("callback: redis")
	// ErrDispatcherClosed is returned by a Dispatcher's Run or Shutdown after it has shut down.
	ErrDispatcherClosed = errors.New("callback: dispatcher closed")
	// ErrNotDeadLetter is the per-item error of Replay for an event id that is not dead-lettered.
	ErrNotDeadLetter = errors.New("callback: not a dead letter")
	// ErrSignatureMissing marks a request without the timestamp or signature header while a
	// secret is configured.
	ErrSignatureMissing = errors.New("callback: signature missing")
	// ErrSignatureInvalid marks a signature that does not match the body and timestamp, or a
	// malformed signature or timestamp header.
	ErrSignatureInvalid = errors.New("callback: signature invalid")
	// ErrSignatureExpired marks a signed timestamp outside the tolerance window (a replay).
	ErrSignatureExpired = errors.New("callback: signature timestamp outside tolerance")
	// ErrInvalidPayload marks a callback body that is not a valid callback. See PayloadError.
	ErrInvalidPayload = errors.New("callback: invalid payload")
	// ErrStore marks a failure of a callback Store.
	ErrStore = errors.New("callback: store")
	// ErrStoreClosed is returned by a Store used after Close.
	ErrStoreClosed = errors.New("callback: store closed")
)

// URLError says why a destination URL was refused. It unwraps to ErrURLNotAllowed.
type URLError struct {
	URL    string
	Reason string
}

func (e *URLError) Error() string {
	return fmt.Sprintf("callback: url not allowed %q: %s", e.URL, e.Reason)
}

// Unwrap returns ErrURLNotAllowed.
func (e *URLError) Unwrap() error { return ErrURLNotAllowed }

// PayloadError says what is wrong with a callback body. Its Error text is what the receiver sends
// back with a 400.
type PayloadError struct {
	Field  string // JSON field, "" for the body as a whole
	Reason string
}

func (e *PayloadError) Error() string {
	if e.Field == "" {
		return "callback: invalid payload: " + e.Reason
	}
	return fmt.Sprintf("callback: invalid payload: %s %s", e.Field, e.Reason)
}

// Unwrap returns ErrInvalidPayload.
func (e *PayloadError) Unwrap() error { return ErrInvalidPayload }

// ReplayErrors is returned by Outbox.Replay when some items failed: one entry per requested event
// id, aligned with the input, nil for the ids that were put back.
type ReplayErrors []error

func (e ReplayErrors) Error() string {
	var b strings.Builder
	n := 0
	for _, err := range e {
		if err == nil {
			continue
		}
		if n == 0 {
			b.WriteString(err.Error())
		}
		n++
	}
	if n > 1 {
		fmt.Fprintf(&b, " (and %d more)", n-1)
	}
	return b.String()
}

// Count returns the number of non-nil errors.
func (e ReplayErrors) Count() int {
	n := 0
	for _, err := range e {
		if err != nil {
			n++
		}
	}
	return n
}

// Unwrap returns the non-nil item errors, so errors.Is(err, ErrNotDeadLetter) holds when any item
// was not a dead letter.
func (e ReplayErrors) Unwrap() []error {
	var out []error
	for _, err := range e {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// redisError wraps a redigo error as ErrRedis, saying what was being done.
func redisError(op string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrRedis, op, err)
}
