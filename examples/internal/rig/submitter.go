package rig

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/gomodule/redigo/redis"
)

// Submission batching: concurrent POST /submit-task requests share their Redis round trips.
// Each flush writes the id mappings of a batch (one MULTI/EXEC, all or nothing), then publishes
// its messages (one pipeline, an outcome per message), then deletes the mappings of messages
// that failed. A lone request is a batch of one, so it waits for nobody; under load a
// submission costs a fraction of a round trip instead of two.
const (
	maxSubmitBatch  = 128 // submissions per flush
	submitFlushers  = 4   // flushes in flight at once
	submitRedisTime = 10 * time.Second
)

// submitter batches submissions. It is safe for concurrent use; the zero value is not usable.
type submitter struct {
	ids      idStore
	producer *celerycompat.Producer
	sem      chan struct{} // a slot per concurrent flush

	mu      sync.Mutex
	pending []*pendingSubmit
}

type pendingSubmit struct {
	ids    taskIDs
	kwargs map[string]any
	done   chan error // buffered: the flusher never waits for the submitter
}

func newSubmitter(ids idStore, producer *celerycompat.Producer) *submitter {
	return &submitter{ids: ids, producer: producer, sem: make(chan struct{}, submitFlushers)}
}

// submit records ids and publishes tasks.process_task with kwargs, batched with whatever other
// submissions are waiting. It returns nil once both are in Redis. On error neither remains,
// except a mapping whose clean-up also failed (see NewAPI). It does not give up when ctx ends:
// once queued, a submission is finished, so that the answer is never "failed" for a task that
// was published.
func (s *submitter) submit(ctx context.Context, ids taskIDs, kwargs map[string]any) error {
	p := &pendingSubmit{ids: ids, kwargs: kwargs, done: make(chan error, 1)}
	s.mu.Lock()
	s.pending = append(s.pending, p)
	s.mu.Unlock()
	select {
	case err := <-p.done:
		return err
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
		// Flush batches until ours is answered; under steady load this request does not go
		// on writing everyone else's. Nothing left pending means another flusher has ours.
		for {
			select {
			case err := <-p.done:
				return err
			default:
			}
			if !s.flushOnce(context.WithoutCancel(ctx)) {
				return <-p.done
			}
		}
	}
}

// flushOnce takes up to maxSubmitBatch pending submissions and writes them; false when there
// were none.
func (s *submitter) flushOnce(ctx context.Context) bool {
	s.mu.Lock()
	n := min(len(s.pending), maxSubmitBatch)
	batch := slices.Clone(s.pending[:n])
	s.pending = slices.Delete(s.pending, 0, n) // clears the freed tail: answered submissions are not kept
	s.mu.Unlock()
	if n == 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, submitRedisTime)
	defer cancel()
	all := make([]taskIDs, n)
	for i, p := range batch {
		all[i] = p.ids
	}
	if err := s.ids.putBatch(ctx, all); err != nil {
		for _, p := range batch {
			p.done <- err
		}
		return true
	}
	reqs := make([]celerycompat.TaskRequest, n)
	for i, p := range batch {
		reqs[i] = celerycompat.TaskRequest{Name: TaskName, Kwargs: p.kwargs,
			Options: []celerycompat.SendOption{celerycompat.WithTaskID(p.ids.Celery)}}
	}
	_, errs := s.producer.SendBatch(ctx, reqs)
	var failed []taskIDs
	for i, err := range errs {
		if err != nil {
			failed = append(failed, batch[i].ids)
		}
	}
	if len(failed) > 0 {
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), dropTimeout)
		defer dcancel()
		if derr := s.ids.drop(dctx, failed...); derr != nil {
			for i, err := range errs {
				if err != nil {
					errs[i] = fmt.Errorf("%w (its id mapping is left until it expires: %v)", err, derr)
				}
			}
		}
	}
	for i, p := range batch {
		p.done <- errs[i]
	}
	return true
}

// putBatch records both keys of every pair in one MULTI/EXEC: all or nothing.
func (s idStore) putBatch(ctx context.Context, all []taskIDs) error {
	c, err := s.pool.GetContext(ctx)
	if err != nil {
		return fmt.Errorf("record task ids: %w", err)
	}
	defer c.Close()
	ttl := int64(s.ttl / time.Second)
	_ = c.Send("MULTI")
	for _, ids := range all {
		val, _ := json.Marshal(ids) // two strings always encode
		_ = c.Send("SET", idKeyPrefix+ids.Business, val, "EX", ttl)
		_ = c.Send("SET", idKeyPrefix+ids.Celery, val, "EX", ttl)
	}
	if _, err := redis.DoContext(c, ctx, "EXEC"); err != nil {
		return fmt.Errorf("record task ids: %w", err)
	}
	return nil
}
