package loadtest

import (
	"context"
	"fmt"
	"time"
)

// Observed is what a Source saw of one task's callbacks.
type Observed struct {
	// Callbacks is how many callbacks the receiver holds for the task: 1 is right, more is a
	// duplicate in the store (the Go receiver dedupes by event id, so more means the task ran
	// under two Celery ids, or with two outcomes).
	Callbacks int
	// Statuses are their "status" values ("success", "failed"), when the source knows them.
	Statuses []string
	// FirstAt is when the first callback arrived: the receiver's received_at, or when a LogSource
	// saw the line.
	FirstAt time.Time
}

// Source tells which tasks have had their callback. Lookup is called with the business ids still
// pending (and once more with all of them at the end) and returns an entry for each one whose
// callback has arrived.
type Source interface {
	Lookup(ctx context.Context, ids []string) (map[string]Observed, error)
	// Describe names the source in the report ("Go receiver at http://...").
	Describe() string
}

// SourceStats are a receiver's running totals (the Go receiver's GET /callbacks/stats).
type SourceStats struct {
	Received   int64            `json:"received"`   // every accepted delivery
	Unique     int64            `json:"unique"`     // stored callbacks
	Duplicates int64            `json:"duplicates"` // deliveries of an event already stored (suppressed)
	ByStatus   map[string]int64 `json:"by_status"`
}

// StatsSource is a Source that can also report running totals cheaply. Wait uses them to show
// progress and to look callbacks up one by one only when the totals say they are all there (or
// every couple of seconds, in case the totals were reset by a receiver restart).
type StatsSource interface {
	Source
	Stats(ctx context.Context) (SourceStats, error)
}

// Baseline returns src's totals before a run (nil when src keeps none or they cannot be read),
// so that Wait and the report count only this run's callbacks.
func Baseline(ctx context.Context, src Source) *SourceStats {
	ss, ok := src.(StatsSource)
	if !ok {
		return nil
	}
	st, err := ss.Stats(ctx)
	if err != nil {
		return nil
	}
	return &st
}

// Observations is the outcome of the wait.
type Observations struct {
	Tasks    map[string]Observed // by business id, the tasks whose callback arrived
	Before   *SourceStats        // totals before the run (nil: unknown)
	After    *SourceStats        // totals after the wait (nil: unknown)
	Duration time.Duration       // how long the wait took
}

// sweepEvery is the longest time between per-id sweeps while the totals do not yet say that
// every callback is in.
const sweepEvery = 2 * time.Second

// Wait waits until every accepted task of sub has its callback, or ctx ends. It returns what it
// saw in both cases; the error is ctx's, wrapped, when the wait ended early (a timeout), or the
// Source's when it kept failing to the end.
func Wait(ctx context.Context, cfg Config, src Source, sub *Submission, before *SourceStats) (*Observations, error) {
	cfg = cfg.withDefaults()
	start := time.Now()
	obs := &Observations{Tasks: map[string]Observed{}, Before: before}
	pending := map[string]bool{}
	var all []string
	for _, t := range sub.Accepted() {
		pending[t.BusinessTaskID] = true
		all = append(all, t.BusinessTaskID)
	}
	total := len(all)
	b := newBar(cfg.Progress, total, "callbacks ")
	ss, hasStats := src.(StatsSource)
	if before == nil {
		hasStats = false // no baseline: totals would count other runs' callbacks
	}

	var lastErr error
	// The first per-id sweep waits for the totals (or sweepEvery): sweeping at once looked up
	// every task while the run was busy producing them, loading the receiver under test.
	lastSweep := start
	tick := time.NewTicker(cfg.PollInterval)
	defer tick.Stop()
	for len(pending) > 0 {
		since := time.Since(lastSweep)
		sweep := since >= sweepEvery
		if hasStats {
			if st, err := ss.Stats(ctx); err == nil {
				arrived := int(st.Unique - before.Unique)
				b.set(min(max(arrived, total-len(pending)), total))
				// The totals say all are in: look them up, but not more often than every 100 ms
				// (other clients of the receiver may make the totals run ahead).
				if arrived >= total && since >= max(cfg.PollInterval, 100*time.Millisecond) {
					sweep = true
				}
			}
		} else if since >= max(cfg.PollInterval, 250*time.Millisecond) {
			sweep = true
		}
		if sweep {
			lastSweep = time.Now()
			got, err := src.Lookup(ctx, sortedIDs(pending))
			if err != nil {
				lastErr = err
			}
			for id, o := range got {
				obs.Tasks[id] = o
				delete(pending, id)
			}
			b.set(total - len(pending))
			if len(pending) == 0 {
				break
			}
		}
		select {
		case <-ctx.Done():
			b.exit()
			obs.Duration = time.Since(start)
			obs.finalPass(cfg, src, all)
			err := fmt.Errorf("loadtest: waiting for callbacks (%d of %d missing): %w", len(pending), total, ctx.Err())
			if lastErr != nil {
				err = fmt.Errorf("%w; last lookup error: %v", err, lastErr)
			}
			return obs, err
		case <-tick.C:
		}
	}
	b.finish()
	obs.Duration = time.Since(start)
	obs.finalPass(cfg, src, all)
	return obs, nil
}

// finalPass looks every task up once more (a duplicate may have been stored after the task's
// first callback was seen) and reads the totals after the run. It has its own short deadline, so
// it also runs after a timeout.
func (o *Observations) finalPass(cfg Config, src Source, all []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if got, err := src.Lookup(ctx, all); err == nil {
		for id, ob := range got {
			prev, ok := o.Tasks[id]
			if ok && !prev.FirstAt.IsZero() && (ob.FirstAt.IsZero() || prev.FirstAt.Before(ob.FirstAt)) {
				ob.FirstAt = prev.FirstAt
			}
			o.Tasks[id] = ob
		}
	}
	if ss, ok := src.(StatsSource); ok {
		if st, err := ss.Stats(ctx); err == nil {
			o.After = &st
		}
	}
}
