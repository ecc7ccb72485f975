package celerycompat

import (
	"context"
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
	held    bool // counted by Consumer.Hold (waiting for its ETA)
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

// outageLog logs an outage of the broker (Redis or RabbitMQ) or the result backend once when it
// starts and once when it ends, not per attempt.
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
		o.log.Error("broker or result backend unavailable; retrying with backoff", "op", what, "error", err)
	}
	o.fails++
	d := 50 * time.Millisecond << min(o.fails-1, 7) // 50 ms .. 6.4 s
	return min(d, 5*time.Second)
}

func (o *outageLog) ok() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fails > 0 {
		o.log.Info("broker and result backend reachable again", "down_for", time.Since(o.since).Round(time.Millisecond), "attempts", o.fails)
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

// fetchLoop takes messages while the prefetch window has room, as many per call as there are
// free slots (up to maxFetchBatch). ctx ends when the worker stops fetching; whatever Next still
// returns then is accepted (it is held) and, being reserved, put back by requeueWaiting.
func (w *Worker) fetchLoop(ctx context.Context) {
	fetchCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-w.stop:
			cancel()
		case <-fetchCtx.Done():
		}
	}()
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
		ds, err := w.cons.Next(fetchCtx, n)
		for range n - len(ds) {
			<-w.slots
		}
		for _, d := range ds { // what a failed reply still carried is held too: run it
			w.accept(ctx, d)
		}
		switch {
		case fetchCtx.Err() != nil:
			return
		case err != nil:
			if !w.sleep(w.outage.fail("fetch", err)) {
				return
			}
		default:
			w.outage.ok()
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
	it.held = true
	w.cons.Hold(1)
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
		w.unhold(it)
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
		if err := w.cons.Requeue(ctx, it.d, false); err != nil {
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
	w.unhold(it)
}

// unhold gives back the Consumer.Hold an ETA message took. The caller holds w.mu.
func (w *Worker) unhold(it *inflight) {
	if it.held {
		it.held = false
		w.cons.Hold(-1)
	}
}
