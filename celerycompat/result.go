package celerycompat

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// AsyncResult is a handle on one task's result, like Celery's AsyncResult. It holds no state
// beyond the id and is safe for concurrent use.
type AsyncResult struct {
	ID string
	b  ResultBackend
}

// AsyncResult returns a handle on the result of task id.
func (b *Backend) AsyncResult(id string) *AsyncResult { return &AsyncResult{ID: id, b: b} }

// backend returns the handle's result backend, or an error for a handle made without one (a
// Producer without Backend returns such handles).
func (r *AsyncResult) backend() (ResultBackend, error) {
	if r.b == nil || nilBackend(r.b) {
		return nil, fmt.Errorf("%w: task %s: the handle has no result backend", ErrInvalidConfig, r.ID)
	}
	return r.b, nil
}

// Meta reads the stored result once (PENDING when nothing is stored).
func (r *AsyncResult) Meta(ctx context.Context) (*ResultMeta, error) {
	b, err := r.backend()
	if err != nil {
		return nil, err
	}
	return b.GetMeta(ctx, r.ID)
}

// State reads the task's current state.
func (r *AsyncResult) State(ctx context.Context) (State, error) {
	m, err := r.Meta(ctx)
	if err != nil {
		return "", err
	}
	return m.Status, nil
}

// Ready reports whether the task reached SUCCESS, FAILURE or REVOKED.
func (r *AsyncResult) Ready(ctx context.Context) (bool, error) {
	s, err := r.State(ctx)
	return s.Ready(), err
}

// Forget deletes the stored result.
func (r *AsyncResult) Forget(ctx context.Context) error {
	b, err := r.backend()
	if err != nil {
		return err
	}
	return b.Forget(ctx, r.ID)
}

// Get waits until the task is ready and returns its result: the return value on SUCCESS, a
// *TaskError (State set) on FAILURE or REVOKED. It waits without polling (on Redis, on the
// backend's shared pub/sub connection; on rpc://, on the reply queue), and returns ctx.Err()
// when ctx ends first. Use a ctx with a deadline for Celery's get(timeout=...).
func (r *AsyncResult) Get(ctx context.Context) (any, error) {
	m, err := r.Wait(ctx)
	if err != nil {
		return nil, err
	}
	if m.Status.Propagates() {
		if te, ok := m.Result.(*TaskError); ok && te != nil {
			return nil, te
		}
		return nil, fmt.Errorf("celerycompat: result of task %s: %w", r.ID,
			&DecodeError{Field: "result", Err: fmt.Errorf("%s without an exception", m.Status)})
	}
	return m.Result, nil
}

// Wait blocks until the task is in a ready state and returns its meta (a FAILURE is returned as
// meta, not as an error). See the backend's WaitMeta.
func (r *AsyncResult) Wait(ctx context.Context) (*ResultMeta, error) {
	b, err := r.backend()
	if err != nil {
		return nil, err
	}
	return b.WaitMeta(ctx, r.ID)
}

// WaitMeta blocks until task id is in a ready state and returns its meta (ResultBackend).
//
// It subscribes to the result channel first and reads the key once the server has confirmed the
// subscription, then waits for published values; after a reconnect of the pub/sub connection it
// reads the key again, so no store is missed.
func (b *Backend) WaitMeta(ctx context.Context, id string) (*ResultMeta, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cons := b.consumer
	w, err := cons.subscribe(b.keys.TaskMeta(id))
	if err != nil {
		return nil, err
	}
	defer cons.unsubscribe(w)

	var retry <-chan time.Time // set after a failed read of the key
	var backoff time.Duration
	for {
		reread := false
		select {
		case <-w.sig:
		case <-retry:
			retry, reread = nil, true
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-cons.ctx.Done():
			return nil, errBackendClosed
		}
		msgs, resync := w.take()
		for _, raw := range msgs {
			m, err := b.decodeMeta(id, raw)
			if err != nil {
				return nil, err
			}
			if m.Status.Ready() {
				return m, nil
			}
		}
		if !resync && !reread {
			continue
		}
		m, err := b.GetMeta(ctx, id)
		switch {
		case err == nil:
			if m.Status.Ready() {
				return m, nil
			}
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case errors.Is(err, ErrBackend):
			// Redis is unreachable; the pub/sub side will notice too and resync after it
			// reconnects. Retry the read in case only this connection failed.
			backoff = min(max(2*backoff, consumerMinBackoff), consumerMaxBackoff)
			retry = time.After(backoff)
		default:
			return nil, err
		}
	}
}
