package celerycompat

import (
	"context"
	"sync"
)

// ackGroup is a group commit for acknowledgements. The first Ack to arrive while none is being
// written writes its own tag at once (no added latency for a lone ack); Acks that arrive while
// that write is in flight queue up, and the first of them then writes the whole queue in one
// MULTI for all of them. Every Ack still returns only once its own tag is removed, with the
// error of the write that carried it. The zero value is ready; it is safe for concurrent use.
type ackGroup struct {
	mu       sync.Mutex
	pending  []*ackWaiter
	flushing bool
}

type ackWaiter struct {
	tag  string
	done chan ackResult // cap 1
}

type ackResult struct {
	err  error
	lead bool // no result yet: write the queue, this waiter first among it
}

// maxAckBatch bounds one MULTI's tags.
const maxAckBatch = 256

func (g *ackGroup) ack(ctx context.Context, b *Broker, tag string) error {
	me := &ackWaiter{tag: tag, done: make(chan ackResult, 1)}
	g.mu.Lock()
	g.pending = append(g.pending, me)
	lead := !g.flushing
	g.flushing = true
	g.mu.Unlock()
	if !lead {
		r := <-me.done // the writer in flight always answers: a result, or the lead
		if !r.lead {
			return r.err
		}
	}
	// Leading: write what is queued (our own tag among it), answer the others, then hand the
	// lead to the first that queued meanwhile, or stand down.
	g.mu.Lock()
	n := min(len(g.pending), maxAckBatch)
	batch := g.pending[:n:n]
	g.pending = g.pending[n:]
	g.mu.Unlock()
	tags := make([]string, len(batch))
	for i, w := range batch {
		tags[i] = w.tag
	}
	// The write serves other callers too: do not let our caller's cancellation fail theirs.
	err := b.ackTags(context.WithoutCancel(ctx), tags)
	var mine error
	for _, w := range batch {
		if w == me {
			mine = err
			continue
		}
		w.done <- ackResult{err: err}
	}
	g.mu.Lock()
	if len(g.pending) > 0 {
		next := g.pending[0]
		g.mu.Unlock()
		next.done <- ackResult{lead: true}
		return mine
	}
	g.flushing = false
	g.mu.Unlock()
	return mine
}
