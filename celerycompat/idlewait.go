package celerycompat

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// errWaitUnsupported means the server has no BLMOVE (Redis < 6.2): the worker polls instead.
var errWaitUnsupported = errors.New("BLMOVE not supported by this Redis server")

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

// waitOn runs one blocking wait on c. The read deadline is the wait plus a margin, so a pool
// without a read timeout still notices a dead server.
func (b *Broker) waitOn(ctx context.Context, c redis.Conn, list string, timeout time.Duration) (bool, error) {
	secs := strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", timeout.Seconds()), "0"), ".")
	wctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	cc, ok := c.(redis.ConnWithContext)
	var reply any
	var err error
	if ok {
		reply, err = cc.DoContext(wctx, "BLMOVE", list, list, "RIGHT", "RIGHT", secs)
	} else {
		reply, err = c.Do("BLMOVE", list, list, "RIGHT", "RIGHT", secs)
	}
	if err != nil {
		var re redis.Error
		if errors.As(err, &re) && strings.Contains(strings.ToLower(string(re)), "unknown command") {
			return false, errWaitUnsupported
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, fmt.Errorf("%w: wait on %s: %w", ErrBroker, list, err)
	}
	return reply != nil, nil
}

// idleWaiter wakes an idle fetch loop as soon as any of its lists gets a message, without
// taking the message (see the package doc's "Losing nothing"). It keeps one goroutine per list,
// each blocking in BLMOVE list list RIGHT RIGHT on its own connection while armed. A waiter that
// fires disarms itself and holds no connection until the fetch loop, having found every list
// empty, arms it again; so a list that stays non-empty while the worker is busy costs nothing.
//
// Shutdown: stop (called once the fetch loop has returned) cancels every waiter's context, which
// closes its connection, and waits for the goroutines.
type idleWaiter struct {
	b       *Broker
	timeout time.Duration // one BLMOVE's timeout, and the longest wait without a fetch
	wake    chan error    // cap 1: nil for "a list is non-empty", or the error that ended a wait

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	lists       map[string]*listWaiter
	unsupported bool
}

type listWaiter struct {
	cancel context.CancelFunc
	armed  bool
	arm    chan struct{} // cap 1
}

func newIdleWaiter(ctx context.Context, b *Broker, timeout time.Duration) *idleWaiter {
	ctx, cancel := context.WithCancel(ctx)
	return &idleWaiter{b: b, timeout: timeout, wake: make(chan error, 1), ctx: ctx, cancel: cancel,
		lists: map[string]*listWaiter{}}
}

// wait blocks until one of lists is non-empty (nil), the timeout passes (nil: fetch again, which
// also picks up a changed queue set), stop closes (nil), or a waiter fails (its error).
// errWaitUnsupported means the server cannot wait; the caller polls.
func (iw *idleWaiter) wait(lists []string, stop <-chan struct{}) error {
	iw.mu.Lock()
	if iw.unsupported {
		iw.mu.Unlock()
		return errWaitUnsupported
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
	// after it. Draining it before arming loses nothing, since each armed BLMOVE returns at once
	// if its list is non-empty now.
	select {
	case <-iw.wake:
	default:
	}
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
	select {
	case err := <-iw.wake:
		return err
	case <-t.C:
		return nil
	case <-stop:
		return nil
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
		err := iw.waitArmed(ctx, list)
		iw.mu.Lock()
		lw.armed = false
		if errors.Is(err, errWaitUnsupported) {
			iw.unsupported = true
		}
		iw.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		select {
		case iw.wake <- err:
		default:
		}
	}
}

// waitArmed holds one connection and renews the blocking wait until list is non-empty or an error
// occurs.
func (iw *idleWaiter) waitArmed(ctx context.Context, list string) error {
	c, err := iw.b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	for {
		ready, err := iw.b.waitOn(ctx, c, list, iw.timeout)
		if err != nil || ready {
			return err
		}
	}
}

// stop ends every waiter and waits for them.
func (iw *idleWaiter) stop() {
	iw.cancel()
	iw.wg.Wait()
}
