// Package batch group-commits the Saves of a callback store: one writer goroutine takes every
// Save waiting (up to a bound) and stores them with one call, in one transaction, so concurrent
// Saves share the cost of a commit (an fsync, a round trip). The SQLite and PostgreSQL stores
// use it.
package batch

import (
	"context"
	"fmt"
	"sync"

	"github.com/celerybridge/celerybridge/callback"
)

// CommitFunc stores items in one transaction. It returns, aligned with items, whether each was
// stored (false: it was there already); on error nothing is stored. It must not keep items,
// which is reused for the next batch. It is only ever called from one goroutine.
type CommitFunc[T any] func(items []T) (stored []bool, err error)

// Committer group-commits items through a CommitFunc. It is safe for concurrent use; call Close
// when done.
type Committer[T any] struct {
	commit CommitFunc[T]
	max    int

	mu     sync.RWMutex // guards closed and sending on reqs
	closed bool
	reqs   chan request[T]
	done   chan struct{}
}

type request[T any] struct {
	item T
	res  chan result
}

type result struct {
	stored bool
	err    error
}

// New starts a Committer that passes commit at most max items at a time (max < 1 means 1).
func New[T any](max int, commit CommitFunc[T]) *Committer[T] {
	if max < 1 {
		max = 1
	}
	c := &Committer[T]{commit: commit, max: max, reqs: make(chan request[T], max), done: make(chan struct{})}
	go c.writer()
	return c
}

// Save queues item for the next commit and waits for it: stored reports whether the commit
// stored it, err is the commit's error. When ctx ends first Save returns ctx.Err(), but a queued
// item may still be committed (a retried request then finds it stored). After Close it returns
// callback.ErrStoreClosed.
func (c *Committer[T]) Save(ctx context.Context, item T) (stored bool, err error) {
	req := request[T]{item: item, res: make(chan result, 1)}
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return false, callback.ErrStoreClosed
	}
	select {
	case c.reqs <- req:
	case <-ctx.Done():
		c.mu.RUnlock()
		return false, ctx.Err()
	}
	c.mu.RUnlock()
	select {
	case r := <-req.res:
		return r.stored, r.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// Close commits what is queued, then stops the writer. Later calls return
// callback.ErrStoreClosed.
func (c *Committer[T]) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return callback.ErrStoreClosed
	}
	c.closed = true
	close(c.reqs)
	c.mu.Unlock()
	<-c.done
	return nil
}

// writer commits everything waiting, max at a time, until reqs is closed.
func (c *Committer[T]) writer() {
	defer close(c.done)
	batch := make([]request[T], 0, c.max)
	items := make([]T, 0, c.max)
	for req := range c.reqs {
		batch = append(batch[:0], req)
	more:
		for len(batch) < c.max {
			select {
			case r, ok := <-c.reqs:
				if !ok {
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		items = items[:0]
		for _, r := range batch {
			items = append(items, r.item)
		}
		stored, err := c.commit(items)
		if err == nil && len(stored) != len(items) {
			err = fmt.Errorf("%w: batch: commit answered %d results for %d items", callback.ErrStore, len(stored), len(items))
		}
		for i, r := range batch {
			r.res <- result{stored: err == nil && stored[i], err: err}
		}
		clear(items) // drop references to the committed items
	}
}
