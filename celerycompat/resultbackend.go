package celerycompat

import (
	"context"
	"errors"
)

// ResultBackend is what a Worker stores task states in and what an AsyncResult reads them from:
// Celery's result backend, reduced to the calls a worker and a client make. *Backend (Redis)
// implements it; package celerycompat/amqp implements Celery's rpc:// backend (results as
// messages to the caller's reply queue).
//
// Chord and group bookkeeping is not part of it: only *Backend keeps it. With another backend
// SendChord returns an error wrapping ErrChordUnsupported, as Celery refuses chords on rpc://.
// Implementations must be safe for concurrent use.
type ResultBackend interface {
	// StoreState stores meta, the state of the task req describes. req is the task message the
	// worker is executing (its reply_to and correlation_id address an rpc result), or nil when a
	// state is stored for a task other than the one being executed (the rest of a failed chain,
	// a revoke of a task not held). It reports whether the state was stored: Redis keeps an
	// existing SUCCESS, rpc:// stores nothing for a request without reply_to, as Celery does.
	StoreState(ctx context.Context, req *Message, meta ResultMeta) (stored bool, err error)
	// GetMeta returns the task's current state once, PENDING when nothing is known.
	GetMeta(ctx context.Context, id string) (*ResultMeta, error)
	// WaitMeta blocks until the task is in a ready state (SUCCESS, FAILURE, REVOKED) and returns
	// its meta, or ctx's error when ctx ends first.
	WaitMeta(ctx context.Context, id string) (*ResultMeta, error)
	// Forget drops the task's result (AsyncResult.forget).
	Forget(ctx context.Context, id string) error
}

// ReplyQueuer is an optional capability of a ResultBackend that receives results on a reply
// queue (rpc://): a Producer bound to it sets every task's reply_to to ReplyQueue, as Celery's
// send_task sets it to app.thread_oid.
type ReplyQueuer interface {
	// ReplyQueue is the name of the queue the backend receives results on.
	ReplyQueue() string
}

// ErrChordUnsupported is wrapped by the error of a chord sent with a result backend that keeps
// no chord bookkeeping (Celery: `The "rpc" result backend does not support chords!`).
var ErrChordUnsupported = errors.New(`celerycompat: the result backend does not support chords (Celery: "The \"rpc\" result backend does not support chords!")`)

var _ ResultBackend = (*Backend)(nil)

// StoreState stores meta (ResultBackend); req is not needed on Redis. See StoreResult.
func (b *Backend) StoreState(ctx context.Context, _ *Message, meta ResultMeta) (bool, error) {
	return b.StoreResult(ctx, meta)
}

// AsyncResultOn returns a handle on the result of task id read from rb.
func AsyncResultOn(rb ResultBackend, id string) *AsyncResult { return &AsyncResult{ID: id, b: rb} }

// redisBackend returns rb as the Redis *Backend that keeps chord bookkeeping, or nil.
func redisBackend(rb ResultBackend) *Backend {
	b, _ := rb.(*Backend)
	return b
}

// nilBackend reports whether rb holds a nil *Backend (an App without ResultBackend passes one).
func nilBackend(rb ResultBackend) bool {
	b, ok := rb.(*Backend)
	return ok && b == nil
}
