package celerycompat

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat/internal/rdb"

	"github.com/gomodule/redigo/redis"
)

// errWaitUnsupported means the server has no BLMOVE (Redis < 6.2): the worker polls instead.
var errWaitUnsupported = rdb.ErrWaitUnsupported

// WaitList blocks until list is non-empty or timeout passes, and reports whether it is. It
// removes nothing: BLMOVE list list RIGHT RIGHT takes the tail element and pushes it back to the
// tail in one atomic step, so the list is unchanged whether the caller lives or dies afterwards.
// A caller that is woken must still take messages with Fetch; the wake-up is only a hint. The
// connection is held for the whole wait; cancelling ctx closes it.
func (b *Broker) WaitList(ctx context.Context, list string, timeout time.Duration) (bool, error) {
	c, err := b.conn(ctx)
	if err != nil {
		return false, err
	}
	defer c.Close()
	return b.waitOn(ctx, c, list, timeout)
}

// waitOn runs one blocking wait on c (rdb.WaitList).
func (b *Broker) waitOn(ctx context.Context, c redis.Conn, list string, timeout time.Duration) (bool, error) {
	ok, err := rdb.WaitList(ctx, c, list, timeout)
	switch {
	case err == nil || errors.Is(err, errWaitUnsupported):
		return ok, err
	case ctx.Err() != nil:
		return false, ctx.Err()
	}
	return false, fmt.Errorf("%w: wait on %s: %w", ErrBroker, list, err)
}

// idleWaiter wakes an idle fetch loop as soon as any of its lists gets a message, without
// taking the message by the wait itself (see the package doc's "Losing nothing"). It keeps one
// goroutine per list, each blocking in BLMOVE list list RIGHT RIGHT on its own connection while
// armed. A waiter that fires disarms itself and holds no connection until the fetch loop, having
// found every list empty, arms it again; so a list that stays non-empty while the worker is busy
// costs nothing.
//
// Each wait is a round: the first waiter to fire claims it and runs the atomic fetch script at
// once on its own connection (saving a hand-off and a connection checkout on the way to the
// task), for as many messages as the fetch loop has room for; later wake-ups of the same round
// only signal. The fetch loop closes the round when it stops waiting; if a waiter claimed it
// first, the loop waits for that fetch's deliveries, so that at most one fetch runs per round and
// nothing fetched is left unseen.
//
// Queue changes: a round fetches from the queues the fetch loop read, tagged with the
// generation of the worker's queue list they came from. interrupt (after a queue was removed)
// closes a round of an older generation before any waiter claims it, or waits for the fetch of a
// waiter that already did; and wait refuses to open a round of an older generation. So once
// interrupt returns no fetch of the old list is under way or can start.
//
// Shutdown: stop (called once the fetch loop has returned) cancels every waiter's context, which
// closes its connection, and waits for the goroutines. A claimed fetch is not cancelled: its
// reply carries messages already recorded as held.
type idleWaiter struct {
	b       *Broker
	timeout time.Duration   // one BLMOVE's timeout, and the longest wait without a fetch
	wake    chan wakeResult // cap 1

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	round       *waitRound
	gen         uint64 // newest queue-list generation interrupt was told of
	lists       map[string]*listWaiter
	unsupported bool
}

// Round states: open, claimed by a waiter (whose fetch closes done), closed without a fetch (by
// the fetch loop or by interrupt).
const (
	roundOpen int32 = iota
	roundFetching
	roundClosed
)

// waitRound is one wait of the fetch loop: what to fetch, and who claimed the fetch.
type waitRound struct {
	queues []string
	gen    uint64
	max    int
	state  atomic.Int32
	done   chan struct{} // closed when a claiming waiter's fetch has returned
	intr   chan struct{} // closed when interrupt closed the round
}

// claim makes the round's one fetch the caller's.
func (r *waitRound) claim() bool { return r.state.CompareAndSwap(roundOpen, roundFetching) }

// close ends the round without a fetch; false if it was claimed or closed already.
func (r *waitRound) close() bool { return r.state.CompareAndSwap(roundOpen, roundClosed) }

// wakeResult ends a wait: fetched says a waiter ran the fetch (ds, err are its result);
// otherwise err is nil for "a list is non-empty" or the error that ended a wait.
type wakeResult struct {
	fetched bool
	ds      []*Delivery
	err     error
}

type listWaiter struct {
	cancel context.CancelFunc
	armed  bool
	arm    chan struct{} // cap 1
}

func newIdleWaiter(ctx context.Context, b *Broker, timeout time.Duration) *idleWaiter {
	ctx, cancel := context.WithCancel(ctx)
	return &idleWaiter{b: b, timeout: timeout, wake: make(chan wakeResult, 1), ctx: ctx, cancel: cancel,
		lists: map[string]*listWaiter{}}
}

// wait blocks until one of the lists of queues is non-empty, the timeout passes, stop closes,
// interrupt closes the round, or a waiter fails. gen is the generation of the worker's queue list
// queues was read from; if interrupt was told of a newer one, wait returns at once (nothing
// fetched, no error), and the caller reads the list again. When a waiter fetched (up to max messages of queues, in kombu's order) it
// returns that fetch's result with fetched true; otherwise the caller fetches (or, on
// errWaitUnsupported, polls: the server cannot wait).
func (iw *idleWaiter) wait(queues []string, gen uint64, max int, stop <-chan struct{}) wakeResult {
	lists := iw.b.fetchLists(queues)
	r := &waitRound{queues: queues, gen: gen, max: max, done: make(chan struct{}), intr: make(chan struct{})}
	iw.mu.Lock()
	if iw.unsupported {
		iw.mu.Unlock()
		return wakeResult{err: errWaitUnsupported}
	}
	if gen < iw.gen {
		iw.mu.Unlock()
		return wakeResult{}
	}
	want := make(map[string]bool, len(lists))
	for _, l := range lists {
		want[l] = true
	}
	for l, lw := range iw.lists {
		if !want[l] {
			lw.cancel()
			delete(iw.lists, l)
		}
	}
	// A wake-up left from an earlier round is stale: the fetch that just came back empty ran
	// after it. (A fetched result is never left over: each round waits for its own.) Draining
	// it before arming loses nothing, since each armed BLMOVE returns at once if its list is
	// non-empty now.
	select {
	case <-iw.wake:
	default:
	}
	iw.round = r
	for _, l := range lists {
		lw, ok := iw.lists[l]
		if !ok {
			ctx, cancel := context.WithCancel(iw.ctx)
			lw = &listWaiter{cancel: cancel, arm: make(chan struct{}, 1)}
			iw.lists[l] = lw
			iw.wg.Add(1)
			go func() { defer iw.wg.Done(); iw.run(ctx, l, lw) }()
		}
		if !lw.armed {
			lw.armed = true
			lw.arm <- struct{}{}
		}
	}
	iw.mu.Unlock()
	t := time.NewTimer(iw.timeout)
	defer t.Stop()
	var res wakeResult
	select {
	case res = <-iw.wake:
		if res.fetched {
			return res
		}
	case <-t.C:
	case <-stop:
	case <-r.intr:
		return wakeResult{}
	}
	// Close the round. If a waiter claimed it, its fetch is running: wait for its deliveries.
	if r.close() {
		return res
	}
	for {
		select {
		case res = <-iw.wake:
			if res.fetched {
				return res
			}
		case <-r.intr:
			return wakeResult{}
		}
	}
}

// interrupt tells the waiter that the worker's queue list is now of generation gen, having lost
// a queue. On return no fetch from an older list is running or can start from a round: an open
// round of an older generation is closed (its wait returns with nothing fetched), a claimed
// round's fetch has returned, and wait opens no round of an older generation.
func (iw *idleWaiter) interrupt(gen uint64) {
	iw.mu.Lock()
	iw.gen = max(iw.gen, gen)
	r := iw.round
	iw.mu.Unlock()
	if r == nil || r.gen >= gen {
		return
	}
	if r.close() {
		close(r.intr)
		return
	}
	if r.state.Load() == roundFetching {
		<-r.done
	}
}

// run is one list's waiter: each arming starts blocking waits on list until it is non-empty.
func (iw *idleWaiter) run(ctx context.Context, list string, lw *listWaiter) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-lw.arm:
		}
		res := iw.waitArmed(ctx, list)
		iw.mu.Lock()
		lw.armed = false
		if errors.Is(res.err, errWaitUnsupported) {
			iw.unsupported = true
		}
		iw.mu.Unlock()
		if res.fetched {
			iw.wake <- res // the round's owner waits for it
			continue
		}
		if ctx.Err() != nil {
			return
		}
		select {
		case iw.wake <- res:
		default:
		}
	}
}

// waitArmed holds one connection and renews the blocking wait until list is non-empty or an error
// occurs; then, if the current round is unclaimed, it claims it and fetches on that connection.
func (iw *idleWaiter) waitArmed(ctx context.Context, list string) wakeResult {
	c, err := iw.b.conn(ctx)
	if err != nil {
		return wakeResult{err: err}
	}
	defer c.Close()
	for {
		ready, err := iw.b.waitOn(ctx, c, list, iw.timeout)
		if err != nil {
			return wakeResult{err: err}
		}
		if ready {
			break
		}
	}
	iw.mu.Lock()
	r := iw.round
	iw.mu.Unlock()
	if r == nil || !r.claim() {
		return wakeResult{}
	}
	// Not cancelled with ctx: a fetch whose reply is lost leaves its messages held by nobody
	// until the visibility timeout.
	ds, err := iw.b.fetchOn(context.WithoutCancel(ctx), c, r.queues, r.max)
	close(r.done)
	return wakeResult{fetched: true, ds: ds, err: err}
}

// stop ends every waiter and waits for them.
func (iw *idleWaiter) stop() {
	iw.cancel()
	iw.wg.Wait()
}

// pollOnly reports whether the server turned out unable to wait (no BLMOVE).
func (iw *idleWaiter) pollOnly() bool {
	iw.mu.Lock()
	defer iw.mu.Unlock()
	return iw.unsupported
}
