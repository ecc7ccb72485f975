package amqp

import (
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"
)

// ackDelay is the longest an acknowledgement waits to be coalesced with others.
const ackDelay = time.Millisecond

// looseTicks is how many timer runs loose acks wait at most for the floor to reach them.
const looseTicks = 4

// ackBatch is how many contiguous acks are coalesced into one basic.ack frame for a consumer
// with this prefetch: an eighth of the window, so that the broker always has most of it to fill.
// A prefetch under 16 sends every ack at once.
func ackBatch(prefetch int) int {
	if prefetch == 0 || prefetch > 512 {
		return 64
	}
	return max(prefetch/8, 1)
}

// acknowledger is the part of *amqp091.Channel the acker uses.
type acknowledger interface {
	Ack(tag uint64, multiple bool) error
}

// acker coalesces the acknowledgements of one consumer into basic.ack frames with multiple=true.
//
// Delivery tags on a channel are 1, 2, 3, … in delivery order. floor is the highest tag such
// that every tag up to it is done: acknowledged (sent or pending here), rejected, or
// dead-lettered. One basic.ack(multiple=true) of the highest pending tag at or below floor
// therefore settles exactly the pending ones: every other tag below it is settled already. A
// pending tag above floor (one below it is still running, held for its ETA, or not yet handed
// to Next) cannot be covered that way; it is acked on its own (see timed).
//
// The consumer calls reset with each new channel (generation); what was pending on the old one
// is dropped, since the broker redelivers that channel's messages. A settlement for an older
// generation, or one whose frame cannot be written, fails with ErrStaleDelivery: the channel is
// unusable and the broker takes the message back, so retrying it cannot succeed.
//
// A batch is sent when batch contiguous acks are pending, after ackDelay, or at Close (batch 1
// sends every ack at once, as a consumer with a small prefetch needs): a crash in between
// repeats those tasks (the broker redelivers them), it loses none. One mutex covers the state
// and every settlement frame, so a multiple ack never overtakes a reject of a tag it covers.
//
// Memory stays bounded while floor is stuck (an ETA task held for a day): the tags settled above
// it are kept as merged intervals, and the pending ones are sent within looseTicks timer runs.
type acker struct {
	batch int
	log   *slog.Logger

	mu      sync.Mutex
	gen     uint64
	ch      acknowledger
	floor   uint64
	settled spans               // settled tags above floor
	pend    map[uint64]struct{} // pending acks above floor ("loose")
	upTo    uint64              // highest pending tag at or below floor, 0 when none
	nUpTo   int                 // pending acks at or below floor
	timer   *time.Timer
	armed   bool
	closed  bool
	// ticks counts the timer's runs while loose acks wait; last is floor at the previous run.
	ticks int
	last  uint64
}

// span is the tags lo through hi.
type span struct{ lo, hi uint64 }

// spans is a set of tags as sorted, disjoint, non-adjacent spans.
type spans []span

// add puts t in the set, merging it with the spans beside it.
func (s *spans) add(t uint64) {
	v := *s
	i := sort.Search(len(v), func(i int) bool { return v[i].hi+1 >= t }) // first span reaching t-1
	switch {
	case i < len(v) && v[i].lo <= t && t <= v[i].hi:
		return
	case i < len(v) && v[i].hi+1 == t:
		v[i].hi = t
		if i+1 < len(v) && v[i+1].lo == t+1 {
			v[i].hi = v[i+1].hi
			v = slices.Delete(v, i+1, i+2)
		}
	case i < len(v) && v[i].lo == t+1:
		v[i].lo = t
	default:
		v = slices.Insert(v, i, span{t, t})
	}
	*s = v
}

func newAcker(batch int, log *slog.Logger) *acker {
	a := &acker{batch: max(batch, 1), log: log, pend: map[uint64]struct{}{}}
	a.timer = time.AfterFunc(time.Hour, a.timed)
	a.timer.Stop()
	return a
}

// reset starts generation gen on ch, dropping what was pending on the previous channel.
func (a *acker) reset(gen uint64, ch acknowledger) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gen, a.ch, a.floor, a.upTo, a.nUpTo, a.ticks, a.last = gen, ch, 0, 0, 0, 0, 0
	a.settled = a.settled[:0]
	clear(a.pend)
}

// current checks that gen is the acker's generation. Called with mu.
func (a *acker) current(gen uint64) error {
	if gen != a.gen || a.ch == nil {
		return fmt.Errorf("channel %d replaced by %d: %w", gen, a.gen, ErrStaleDelivery)
	}
	return nil
}

// unwritten wraps the error of a settlement frame that could not be sent.
func unwritten(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrStaleDelivery, err)
}

// mark records tag as done (pending: its ack is still to send) and moves floor up. Called with mu.
func (a *acker) mark(tag uint64, pending bool) {
	if tag <= a.floor {
		return
	}
	if pending {
		a.pend[tag] = struct{}{}
	} else {
		a.settled.add(tag)
	}
	for {
		next := a.floor + 1
		if _, ok := a.pend[next]; ok {
			delete(a.pend, next)
			a.floor, a.upTo = next, next
			a.nUpTo++
			continue
		}
		if len(a.settled) > 0 && a.settled[0].lo == next {
			a.floor = a.settled[0].hi
			a.settled = slices.Delete(a.settled, 0, 1)
			continue
		}
		return
	}
}

// ack records tag of generation gen as acknowledged and sends the batch when it is full.
func (a *acker) ack(gen, tag uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.current(gen); err != nil {
		return err
	}
	a.mark(tag, true)
	if a.batch == 1 || a.closed {
		return unwritten(a.flush())
	}
	if a.nUpTo >= a.batch {
		return unwritten(a.sendUpTo())
	}
	if !a.armed {
		a.armed = true
		a.timer.Reset(ackDelay)
	}
	return nil
}

// settle sends op (a basic.reject on gen's channel) for tag of generation gen and records the
// tag as done.
func (a *acker) settle(gen, tag uint64, op func() error) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.current(gen); err != nil {
		return err
	}
	if err := op(); err != nil {
		return unwritten(err)
	}
	a.mark(tag, false)
	return nil
}

// sendUpTo sends the contiguous pending acks as one frame. Called with mu.
func (a *acker) sendUpTo() error {
	if a.nUpTo == 0 {
		return nil
	}
	tag, multiple := a.upTo, a.nUpTo > 1
	a.upTo, a.nUpTo = 0, 0
	return a.ch.Ack(tag, multiple)
}

// flush sends every pending ack: the contiguous ones as one frame, the others one by one.
// Called with mu.
func (a *acker) flush() error {
	err := a.sendUpTo()
	for tag := range a.pend {
		if e := a.ch.Ack(tag, false); e != nil && err == nil {
			err = e
		}
		a.settled.add(tag)
	}
	clear(a.pend)
	return err
}

// timed is the ackDelay timer. It sends the contiguous acks. Loose acks wait for the floor to
// reach them while it moves (tasks finishing out of order close the gap within a few runs), for
// at most looseTicks runs; once the floor stops (a long task or an ETA hold below them), they
// are sent one by one. A send error means a lost channel: the broker redelivers, the consumer
// reconnects; it is logged, since those Acks have already returned.
func (a *acker) timed() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.armed = false
	if a.ch == nil {
		return
	}
	a.logUnsent(a.sendUpTo())
	if len(a.pend) == 0 {
		a.ticks = 0
		return
	}
	a.ticks++
	if a.floor == a.last || a.ticks >= looseTicks {
		a.logUnsent(a.flush())
		a.ticks = 0
		return
	}
	a.last = a.floor
	if !a.closed {
		a.armed = true
		a.timer.Reset(ackDelay)
	}
}

// close sends what is pending and stops the timer; acks after it are sent at once.
func (a *acker) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	a.timer.Stop()
	if a.ch != nil {
		a.logUnsent(a.flush())
	}
}

// logUnsent reports acks whose Ack calls have returned but whose frame could not be sent.
func (a *acker) logUnsent(err error) {
	if err != nil {
		a.log.Warn("amqp: coalesced basic.ack not sent; the broker redelivers those messages", "error", err)
	}
}
