package celerycompat

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

type inflightState int

const (
	stReserved  inflightState = iota // prefetched, waiting for a slot to run
	stScheduled                      // waiting for its ETA
	stActive                         // running
	stReleased                       // handed back (requeued) or finished
)

// inflight is one message this worker holds un-acked.
type inflight struct {
	d       *Delivery
	msg     *Message
	req     *Request
	handler Handler
	cfg     taskConfig
	state   inflightState
	slot    bool // holds a prefetch slot
	started time.Time
	timer   *time.Timer
	cancel  context.CancelCauseFunc
}

type workerStats struct {
	processed atomic.Int64
	succeeded atomic.Int64
	failed    atomic.Int64
	retried   atomic.Int64
	revoked   atomic.Int64
	rejected  atomic.Int64
	perTask   sync.Map // task name -> *atomic.Int64
}

func (s *workerStats) count(task string) {
	s.processed.Add(1)
	v, _ := s.perTask.LoadOrStore(task, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// outageLog logs a broker outage once when it starts and once when it ends, not per attempt.
type outageLog struct {
	log   *slog.Logger
	mu    sync.Mutex
	since time.Time
	fails int
}

func (o *outageLog) fail(what string, err error) time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fails == 0 {
		o.since = time.Now()
		o.log.Error("redis unavailable; retrying with backoff", "op", what, "error", err)
	}
	o.fails++
	d := 50 * time.Millisecond << min(o.fails-1, 7) // 50 ms .. 6.4 s
	return min(d, 5*time.Second)
}

func (o *outageLog) ok() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fails > 0 {
		o.log.Info("redis reachable again", "down_for", time.Since(o.since).Round(time.Millisecond), "attempts", o.fails)
		o.fails = 0
	}
}

func (w *Worker) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.stop:
		return false
	}
}

func (w *Worker) releaseSlot(it *inflight) {
	if it.slot {
		it.slot = false
		<-w.slots
	}
}

// maxFetchBatch bounds how many messages one fetch call takes.
const maxFetchBatch = 32

// fetchLoop takes messages while the prefetch window has room, as many per Redis call as there
// are free slots (up to maxFetchBatch).
func (w *Worker) fetchLoop(ctx context.Context) {
	idle := time.Millisecond
	waiter := newIdleWaiter(ctx, w.broker, w.cfg.IdleWait)
	defer waiter.stop()
	w.mu.Lock()
	w.waiter = waiter
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.waiter = nil
		w.mu.Unlock()
	}()
	// emptyWake: the last wait's own fetch found nothing (another worker took the message that
	// woke us), which is as good as a fetch of our own: wait again without one.
	emptyWake := false
	for {
		select {
		case w.slots <- struct{}{}:
		case <-w.stop:
			return
		}
		n := 1
	more:
		for n < maxFetchBatch {
			select {
			case w.slots <- struct{}{}:
				n++
			default:
				break more
			}
		}
		w.fetchMu.Lock()
		w.mu.Lock()
		queues, gen := append([]string(nil), w.queues...), w.qgen
		w.mu.Unlock()
		var ds []*Delivery
		var err error
		if !emptyWake {
			ds, err = w.broker.Fetch(ctx, queues, n)
		}
		w.fetchMu.Unlock()
		emptyWake = false
		if err == nil && len(ds) == 0 && !w.cfg.PollOnly {
			// Every queue is empty: wait for a message, holding the slots, so that the waiter
			// that wakes first can fetch for them at once.
			var res wakeResult
			if res, idle = w.idleWait(waiter, queues, gen, n, idle); res.fetched {
				ds, err = res.ds, res.err
				emptyWake = err == nil && len(ds) == 0
			} else if res.err != nil {
				for range n {
					<-w.slots
				}
				select {
				case <-w.stop:
					return
				default:
				}
				if !w.sleep(w.outage.fail("wait", res.err)) {
					return
				}
				continue
			}
		}
		for range n - len(ds) {
			<-w.slots
		}
		if err != nil {
			for _, d := range ds { // what a failed reply still carried is held: run it
				w.rotate(d.Queue)
				w.accept(ctx, d)
			}
			if !w.sleep(w.outage.fail("fetch", err)) {
				return
			}
			continue
		}
		w.outage.ok()
		if len(ds) == 0 {
			select {
			case <-w.stop:
				return
			default:
			}
			if w.cfg.PollOnly || waiter.pollOnly() {
				if !w.sleep(idle) {
					return
				}
				idle = min(idle*2, w.cfg.PollInterval)
			}
			continue
		}
		idle = time.Millisecond
		for _, d := range ds {
			w.rotate(d.Queue)
			w.accept(ctx, d)
		}
	}
}

// idleWait waits, while every queue is empty, until one of them has a message, the wait's
// timeout passes or the worker stops. A result with fetched set carries the deliveries the
// waking waiter took for the caller's n slots; one with an error other than errWaitUnsupported
// is a broker failure. Where the server cannot wait (Redis < 6.2) it returns at once and the
// caller polls.
func (w *Worker) idleWait(waiter *idleWaiter, queues []string, gen uint64, n int, idle time.Duration) (wakeResult, time.Duration) {
	res := waiter.wait(queues, gen, n, w.stop)
	if errors.Is(res.err, errWaitUnsupported) {
		return wakeResult{}, idle
	}
	return res, time.Millisecond
}

// fenceFetch returns once no fetch from a queue list older than the current one is under way or
// can start: the fetch loop's own fetch has returned (it holds fetchMu from reading the list), and
// the idle waiter has closed or seen through a round of the old list (idleWaiter.interrupt).
// cancel_consumer calls it before replying, as Celery no longer consumes from the queue once it
// has replied.
func (w *Worker) fenceFetch() {
	w.fetchMu.Lock()
	//lint:ignore SA2001 the empty critical section is the point: it waits out the loop's fetch
	w.fetchMu.Unlock()
	w.mu.Lock()
	iw, gen := w.waiter, w.qgen
	w.mu.Unlock()
	if iw != nil {
		iw.interrupt(gen)
	}
}

// rotate moves queue to the end of the consumption order (kombu's round_robin_cycle).
func (w *Worker) rotate(queue string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queues) < 2 {
		return
	}
	for i, q := range w.queues {
		if q == queue {
			copy(w.queues[i:], w.queues[i+1:])
			w.queues[len(w.queues)-1] = q
			return
		}
	}
}

// accept decides what to do with a fetched message. The caller holds a prefetch slot for it.
func (w *Worker) accept(ctx context.Context, d *Delivery) {
	it := &inflight{d: d, slot: true}
	if d.Poisoned || d.DecodeErr != nil {
		w.reject(ctx, it)
		return
	}
	m := d.Message
	it.msg, it.req = m, newRequest(m, d.Queue, w.cfg.Hostname)
	h, cfg, ok := w.lookup(m.Task)
	if !ok {
		w.unknown(ctx, it)
		return
	}
	it.handler, it.cfg = h, w.taskLimits(m.Task, cfg)
	w.mu.Lock()
	w.inflight[d.Tag] = it
	w.mu.Unlock()
	if w.expired(it) {
		w.revoke(ctx, it, RevokedReasonExpired)
		return
	}
	if w.isRevoked(m) {
		w.revoke(ctx, it, RevokedReasonRevoked)
		return
	}
	w.fireOnly(ctx, "task_received", it, func() error {
		return w.hooks.received.fire(ctx, m.Task, &TaskReceived{TaskInfo: taskInfo(it.req)}, w.logPanic)
	})
	w.eventReceived(it)
	w.logReceived(it)
	if m.ETA != nil && m.ETA.After(w.now()) {
		w.schedule(it)
		return
	}
	w.push(it)
}

func (w *Worker) expired(it *inflight) bool {
	return it.msg.Expires != nil && !it.msg.Expires.After(w.now())
}

// schedule holds a message until its ETA without occupying the prefetch window (Celery raises
// the prefetch count for ETA tasks the same way).
func (w *Worker) schedule(it *inflight) {
	w.mu.Lock()
	it.state = stScheduled
	w.releaseSlot(it)
	delay := it.msg.ETA.Sub(w.now())
	it.timer = time.AfterFunc(delay, func() {
		select {
		case w.slots <- struct{}{}:
		case <-w.stop:
			return
		}
		w.mu.Lock()
		if it.state != stScheduled {
			w.mu.Unlock()
			<-w.slots
			return
		}
		it.slot, it.state = true, stReserved
		w.mu.Unlock()
		w.push(it)
	})
	w.mu.Unlock()
}

// push hands a reserved message to the executors. A held slot guarantees room in the channel.
func (w *Worker) push(it *inflight) {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-w.stop:
		// Draining: leave it reserved; requeueWaiting puts it back.
		it.state = stReserved
		return
	default:
	}
	it.state = stReserved
	w.ready <- it
}

// requeueWaiting puts every message that has not started back at the front of its queue.
func (w *Worker) requeueWaiting(ctx context.Context) {
	w.mu.Lock()
	var back []*inflight
	for _, it := range w.inflight {
		if it.state == stReserved || it.state == stScheduled {
			if it.timer != nil {
				it.timer.Stop()
			}
			it.state = stReleased
			back = append(back, it)
		}
	}
	w.mu.Unlock()
	for _, it := range back {
		w.finish(it)
		if _, err := w.broker.Requeue(ctx, it.d.Tag, false); err != nil {
			w.log.Error("could not put a message back; the restore sweep will", "task_id", it.msg.ID, "error", err)
		}
	}
	if len(back) > 0 {
		w.log.Info("restored unacknowledged messages", "count", len(back))
	}
}

// finish forgets a message and frees its slot.
func (w *Worker) finish(it *inflight) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if it.d.Tag != "" {
		delete(w.inflight, it.d.Tag)
	}
	it.state = stReleased
	w.releaseSlot(it)
}

// heldTags lists the delivery tags this worker holds.
func (w *Worker) heldTags() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	tags := make([]string, 0, len(w.inflight))
	for t := range w.inflight {
		tags = append(tags, t)
	}
	return tags
}

// refreshLoop keeps the un-acked scores of held messages fresh, so that no sweep restores work
// this worker is still doing or holding for an ETA.
func (w *Worker) refreshLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.done:
			return
		case <-t.C:
		}
		if err := w.broker.Refresh(ctx, w.heldTags()); err != nil && !errors.Is(err, context.Canceled) {
			w.outage.fail("refresh", err)
		}
	}
}

// restoreLoop runs the visibility-timeout sweep at start and every RestoreInterval.
func (w *Worker) restoreLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.RestoreInterval)
	defer t.Stop()
	for {
		// Refresh our own entries first, so the sweep never restores what we hold.
		if err := w.broker.Refresh(ctx, w.heldTags()); err == nil {
			n, _, err := w.broker.RestoreVisible(ctx)
			if err != nil && !errors.Is(err, context.Canceled) {
				w.log.Warn("restore sweep failed", "error", err)
			} else if n > 0 {
				w.log.Info("restored messages past the visibility timeout", "count", n)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-w.stop:
			return
		case <-t.C:
		}
	}
}
