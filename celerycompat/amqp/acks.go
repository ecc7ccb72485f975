package amqp

import (
	"sync"
	"time"
)

// ackDelay is the longest an acknowledgement waits to be coalesced with others.
const ackDelay = time.Millisecond

// acker coalesces the acknowledgements of one consumer into basic.ack frames with multiple=true.
//
// Delivery tags on a channel are 1, 2, 3, … in delivery order. floor is the highest tag such
// that every tag up to it is done: acknowledged (sent or pending here), rejected, or
// dead-lettered. One basic.ack(multiple=true) of the highest pending tag at or below floor
// therefore settles exactly the pending ones: every other tag below it is settled already. A
// pending tag above floor (one below it is still running, held for its ETA, or not yet handed
// to Next) cannot be covered that way; it is acked on its own when the batch is sent.
//
// A batch is sent when batch contiguous acks are pending, after ackDelay, or at Close (batch 1
// sends every ack at once, as a consumer with a small prefetch needs): a crash in
// between repeats those tasks (the broker redelivers them), it loses none. One mutex covers the
// state and every settlement frame, so a multiple ack never overtakes a reject of a tag it
// covers.
// acknowledger is the part of *amqp091.Channel the acker uses.
type acknowledger interface {
	Ack(tag uint64, multiple bool) error
}

type acker struct {
	batch int

	mu     sync.Mutex
	gen    uint64
	ch     acknowledger
	floor  uint64
	done   map[uint64]bool // tags above floor that are done; true: the ack is pending here
	upTo   uint64          // highest pending tag at or below floor, 0 when none
	nUpTo  int             // pending acks at or below floor
	loose  int             // pending acks above floor
	timer  *time.Timer
	armed  bool
	closed bool
	// ticks counts the timer's runs while loose acks wait; last is floor at the previous run.
	ticks int
	last  uint64
}

// looseTicks is how many timer runs loose acks wait at most for the floor to reach them.
const looseTicks = 4

func newAcker(batch int) *acker {
	a := &acker{batch: max(batch, 1), done: map[uint64]bool{}}
	a.timer = time.AfterFunc(time.Hour, a.timed)
	a.timer.Stop()
	return a
}

// use moves the acker to generation gen on ch; what was pending on an older channel is dropped
// (that channel is gone and the broker redelivers its messages). Called with mu.
func (a *acker) use(gen uint64, ch acknowledger) bool {
	if gen < a.gen {
		return false
	}
	if gen > a.gen {
		a.gen, a.ch, a.floor, a.upTo, a.nUpTo, a.loose, a.ticks, a.last = gen, ch, 0, 0, 0, 0, 0, 0
		clear(a.done)
	}
	return true
}

// mark records tag as done (pending: its ack is still to send) and moves floor up. Called with mu.
func (a *acker) mark(tag uint64, pending bool) {
	if tag <= a.floor {
		return
	}
	a.done[tag] = pending
	if pending {
		a.loose++
	}
	for {
		p, ok := a.done[a.floor+1]
		if !ok {
			return
		}
		a.floor++
		delete(a.done, a.floor)
		if p {
			a.loose--
			a.upTo = a.floor
			a.nUpTo++
		}
	}
}

// ack records tag of generation gen as acknowledged and sends the batch when it is full. It
// reports false when gen's channel has been replaced.
func (a *acker) ack(gen uint64, ch acknowledger, tag uint64) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.use(gen, ch) {
		return false, nil
	}
	a.mark(tag, true)
	if a.batch == 1 || a.closed {
		return true, a.flush()
	}
	if a.nUpTo >= a.batch {
		return true, a.sendUpTo()
	}
	if !a.armed && !a.closed {
		a.armed = true
		a.timer.Reset(ackDelay)
	}
	return true, nil
}

// settle sends op (a basic.reject) for tag of generation gen and records the tag as done. It
// reports false when gen's channel has been replaced.
func (a *acker) settle(gen uint64, ch acknowledger, tag uint64, op func() error) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.use(gen, ch) {
		return false, nil
	}
	if err := op(); err != nil {
		return true, err
	}
	a.mark(tag, false)
	return true, nil
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
	if a.loose == 0 {
		return err
	}
	for tag, p := range a.done {
		if !p {
			continue
		}
		a.done[tag] = false
		if e := a.ch.Ack(tag, false); e != nil && err == nil {
			err = e
		}
	}
	a.loose = 0
	return err
}

// timed is the ackDelay timer. It sends the contiguous acks. Loose acks wait for the floor to
// reach them while it moves (tasks finishing out of order close the gap within a few runs), for
// at most looseTicks runs; once the floor stops (a long task or an ETA hold below them), they
// are sent one by one. Send errors mean a lost channel: the broker redelivers, the consumer
// reconnects.
func (a *acker) timed() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.armed = false
	if a.ch == nil {
		return
	}
	_ = a.sendUpTo()
	if a.loose == 0 {
		a.ticks = 0
		return
	}
	a.ticks++
	if a.floor == a.last || a.ticks >= looseTicks {
		_ = a.flush()
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
	a.closed, a.batch = true, 1
	a.timer.Stop()
	if a.ch != nil {
		_ = a.flush()
	}
}
