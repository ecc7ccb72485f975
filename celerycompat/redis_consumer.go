package celerycompat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Consume starts a Redis consumer for one worker: the atomic fetch script, the idle wait on
// BLMOVE (idlewait.go), and the two loops that keep kombu's visibility timeout honest: held
// messages' un-acked scores are renewed every RefreshInterval, and every RestoreInterval (and
// at once) the sweep puts back what a dead worker, Python or Go, left un-acked. It fails only
// with ErrInvalidConfig (BrokerConfig.DB disagrees with the pool's database); an unreachable
// Redis is left to Next, which reports it and is called again.
func (b *Broker) Consume(ctx context.Context, cfg ConsumerConfig) (Consumer, error) {
	if len(cfg.Queues) == 0 || slices.Contains(cfg.Queues, "") {
		return nil, fmt.Errorf("%w: consume needs non-empty queue names", ErrInvalidConfig)
	}
	if err := b.checkDB(ctx); errors.Is(err, ErrInvalidConfig) {
		return nil, err // inspect and revokes would miss the worker
	}
	vt := b.cfg.VisibilityTimeout
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = min(vt/4, 60*time.Second)
	}
	if cfg.RestoreInterval <= 0 {
		cfg.RestoreInterval = 10 * time.Second
	}
	if cfg.IdleWait <= 0 {
		cfg.IdleWait = 2 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 50 * time.Millisecond
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c := &redisConsumer{b: b, cfg: cfg, log: log, cancel: cancel,
		queues: slices.Clone(cfg.Queues), held: map[string]struct{}{}, idle: time.Millisecond}
	c.waiter = newIdleWaiter(loopCtx, b, cfg.IdleWait)
	c.loops.Add(2)
	go func() { defer c.loops.Done(); c.refreshLoop(loopCtx) }()
	go func() { defer c.loops.Done(); c.restoreLoop(loopCtx) }()
	return c, nil
}

// redisConsumer is Broker's Consumer.
type redisConsumer struct {
	b      *Broker
	cfg    ConsumerConfig
	log    *slog.Logger
	waiter *idleWaiter
	cancel context.CancelFunc
	loops  sync.WaitGroup

	// fetchMu is held by Next from reading queues until its fetch returns, so that SetQueues
	// can wait out a fetch from the old list.
	fetchMu sync.Mutex

	mu     sync.Mutex
	queues []string            // rotation order (kombu's round_robin_cycle)
	qgen   uint64              // generation of queues: bumped when a queue is removed
	held   map[string]struct{} // tags returned by Next and not settled
	closed bool

	// Owned by Next (one at a time).
	idle      time.Duration // current poll pause
	emptyWake bool          // the last wait's own fetch found nothing: wait again without one
}

// Next fetches up to max messages; while every queue is empty it waits on the lists (or polls,
// with PollOnly or on Redis older than 6.2) until a message arrives, one wait (IdleWait) lapses,
// or ctx ends. The fetch
// script itself is never cancelled half-way: a reply it took messages for is not thrown away.
func (c *redisConsumer) Next(ctx context.Context, max int) ([]*Delivery, error) {
	if max < 1 {
		return nil, fmt.Errorf("%w: fetch needs max >= 1", ErrInvalidConfig)
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c.fetchMu.Lock()
		c.mu.Lock()
		queues, gen := slices.Clone(c.queues), c.qgen
		c.mu.Unlock()
		if len(queues) == 0 { // every queue cancelled: wait for add_consumer
			c.fetchMu.Unlock()
			if !sleepCtx(ctx, c.cfg.PollInterval) {
				return nil, ctx.Err()
			}
			continue
		}
		var ds []*Delivery
		var err error
		if !c.emptyWake {
			ds, err = c.b.Fetch(context.WithoutCancel(ctx), queues, max)
		}
		c.fetchMu.Unlock()
		c.emptyWake = false
		if err != nil || len(ds) > 0 {
			return c.took(ds), err
		}
		if !c.cfg.PollOnly && !c.waiter.pollOnly() {
			res := c.waiter.wait(queues, gen, max, ctx.Done())
			if !errors.Is(res.err, errWaitUnsupported) {
				c.idle = time.Millisecond
				switch {
				case res.fetched && res.err == nil && len(res.ds) == 0:
					c.emptyWake = true // another worker took what woke us
				case res.fetched:
					return c.took(res.ds), res.err
				case res.err != nil:
					return nil, fmt.Errorf("wait for messages: %w", res.err)
				}
				if c.emptyWake {
					continue
				}
				// A wake-up or the wait's timeout: return, so that the worker's window can move
				// (an ETA task whose time came needs a slot this call holds).
				return nil, nil
			}
		}
		if !sleepCtx(ctx, c.idle) {
			return nil, ctx.Err()
		}
		c.idle = min(c.idle*2, c.cfg.PollInterval)
	}
}

// took records ds as held and rotates the queues that delivered to the end of the order.
func (c *redisConsumer) took(ds []*Delivery) []*Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range ds {
		if !d.Poisoned && d.Tag != "" {
			c.held[d.Tag] = struct{}{}
		}
		if i := slices.Index(c.queues, d.Queue); i >= 0 && len(c.queues) > 1 {
			c.queues = append(slices.Delete(c.queues, i, i+1), d.Queue)
		}
	}
	if len(ds) > 0 {
		c.idle = time.Millisecond
	}
	return ds
}

func (c *redisConsumer) settled(d *Delivery) {
	c.mu.Lock()
	delete(c.held, d.Tag)
	c.mu.Unlock()
}

// Ack removes d from the un-acked set (Broker.Ack).
func (c *redisConsumer) Ack(ctx context.Context, d *Delivery) error {
	if d.Poisoned {
		return nil // dead-lettered by the fetch script: nothing is held
	}
	err := c.b.Ack(ctx, d.Tag)
	if err == nil {
		c.settled(d)
	}
	return err
}

// Requeue puts d back on its list (Broker.Requeue) and marks it redelivered.
func (c *redisConsumer) Requeue(ctx context.Context, d *Delivery, back bool) error {
	if d.Poisoned {
		return nil
	}
	_, err := c.b.Requeue(ctx, d.Tag, back)
	if err == nil {
		c.settled(d)
	}
	return err
}

// DeadLetter moves d to the dead-letter list with reason (Broker.DeadLetterDelivery).
func (c *redisConsumer) DeadLetter(ctx context.Context, d *Delivery, reason string) error {
	if d.Poisoned {
		return nil // the fetch script dead-lettered it with its reason
	}
	_, err := c.b.DeadLetterDelivery(ctx, d, reason)
	if err == nil {
		c.settled(d)
	}
	return err
}

// SetQueues replaces the queue list. When a queue is removed it returns once no fetch of the old
// list is under way or can start: Next's own fetch has returned (it holds fetchMu from reading
// the list), and the idle waiter has closed or seen through a round of the old list.
func (c *redisConsumer) SetQueues(ctx context.Context, queues []string) error {
	if slices.Contains(queues, "") {
		return fmt.Errorf("%w: empty queue name", ErrInvalidConfig)
	}
	c.mu.Lock()
	removed := false
	for _, q := range c.queues {
		removed = removed || !slices.Contains(queues, q)
	}
	// Keep the rotation order of the queues that stay; new ones go to the end.
	next := slices.DeleteFunc(slices.Clone(c.queues), func(q string) bool { return !slices.Contains(queues, q) })
	for _, q := range queues {
		if !slices.Contains(next, q) {
			next = append(next, q)
		}
	}
	c.queues = next
	if removed {
		c.qgen++
	}
	gen := c.qgen
	c.mu.Unlock()
	if removed {
		c.fetchMu.Lock()
		//lint:ignore SA2001 the empty critical section is the point: it waits out Next's fetch
		c.fetchMu.Unlock()
		c.waiter.interrupt(gen)
	}
	return nil
}

// Hold does nothing on Redis: kombu's Redis transport has no prefetch count to raise, and the
// worker's own window already leaves ETA-held messages out.
func (c *redisConsumer) Hold(int) {}

// Close stops the idle waiters and the refresh and restore loops. Messages still held stay in
// the un-acked set; the restore sweep of any worker puts them back after the visibility timeout.
func (c *redisConsumer) Close(context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.waiter.stop()
	c.cancel()
	c.loops.Wait()
	return nil
}

// heldTags lists the delivery tags this consumer holds.
func (c *redisConsumer) heldTags() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	tags := make([]string, 0, len(c.held))
	for t := range c.held {
		tags = append(tags, t)
	}
	return tags
}

// refreshLoop keeps the un-acked scores of held messages fresh, so that no sweep restores work
// this worker is still doing or holding for an ETA.
func (c *redisConsumer) refreshLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.b.Refresh(ctx, c.heldTags()); err != nil && !errors.Is(err, context.Canceled) {
			c.log.Warn("could not renew held messages; retrying", "error", err)
		}
	}
}

// restoreLoop runs the visibility-timeout sweep at start and every RestoreInterval.
func (c *redisConsumer) restoreLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.RestoreInterval)
	defer t.Stop()
	for {
		// Refresh our own entries first, so the sweep never restores what we hold.
		if err := c.b.Refresh(ctx, c.heldTags()); err == nil {
			n, _, err := c.b.RestoreVisible(ctx)
			if err != nil && !errors.Is(err, context.Canceled) {
				c.log.Warn("restore sweep failed", "error", err)
			} else if n > 0 {
				c.log.Info("restored messages past the visibility timeout", "count", n)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sleepCtx sleeps for d or until ctx ends; false when ctx ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
