package celerycompat

import (
	"context"
	"sync"
)

// commitGroup is a group commit: the first call to arrive while no write is under way writes
// its own item at once (no added latency for a lone call); calls that arrive while that write is
// in flight queue up, and the first of them then writes the whole queue in one round trip for
// all of them. Every call still returns only once its own item is written, with its own result.
// It serves acknowledgements (one MULTI for many tags) and result stores (one pipeline for many
// results). The zero value is ready; it is safe for concurrent use.
type commitGroup[T, R any] struct {
	mu       sync.Mutex
	pending  []*groupWaiter[T, R]
	flushing bool
}

type groupWaiter[T, R any] struct {
	item T
	done chan groupResult[R] // cap 1
}

type groupResult[R any] struct {
	res  R
	lead bool // no result yet: write the queue, this waiter first among it
}

// maxGroupBatch bounds one write's items.
const maxGroupBatch = 256

// do writes item, alone or with the items of concurrent calls, through write, which gets the
// batch and the leading caller's ctx and returns one result per item. A write that carries other
// callers' items must not fail them for the leader's cancellation (context.WithoutCancel).
func (g *commitGroup[T, R]) do(ctx context.Context, item T, write func(context.Context, []T) []R) R {
	me := &groupWaiter[T, R]{item: item, done: make(chan groupResult[R], 1)}
	g.mu.Lock()
	g.pending = append(g.pending, me)
	lead := !g.flushing
	g.flushing = true
	g.mu.Unlock()
	if !lead {
		r := <-me.done // the writer in flight always answers: a result, or the lead
		if !r.lead {
			return r.res
		}
	}
	// Leading: write what is queued (our own item among it), answer the others, then hand the
	// lead to the first that queued meanwhile, or stand down.
	g.mu.Lock()
	n := min(len(g.pending), maxGroupBatch)
	batch := g.pending[:n:n]
	g.pending = g.pending[n:]
	g.mu.Unlock()
	items := make([]T, len(batch))
	for i, w := range batch {
		items[i] = w.item
	}
	results := write(ctx, items)
	var mine R
	for i, w := range batch {
		if w == me {
			mine = results[i]
			continue
		}
		w.done <- groupResult[R]{res: results[i]}
	}
	g.mu.Lock()
	if len(g.pending) > 0 {
		next := g.pending[0]
		g.mu.Unlock()
		next.done <- groupResult[R]{lead: true}
		return mine
	}
	g.flushing = false
	g.mu.Unlock()
	return mine
}

// ackGroup groups Broker.Ack's tags into one MULTI (Broker.ackTags).
type ackGroup struct{ g commitGroup[string, error] }

func (a *ackGroup) ack(ctx context.Context, b *Broker, tag string) error {
	return a.g.do(ctx, tag, func(ctx context.Context, tags []string) []error {
		err := b.ackTags(context.WithoutCancel(ctx), tags)
		errs := make([]error, len(tags))
		for i := range errs {
			errs[i] = err
		}
		return errs
	})
}
