package rig

import (
	"context"
	"encoding/json"
	"errors"
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
	maxSubmitBatch = 128 // submissions per flush
	submitFlushers = 4   // flushes in flight at once
)

// submitter batches submissions. It is safe for concurrent use; the zero value is not usable.
type submitter struct {
	ids      idStore
	producer *celerycompat.Producer
	timeout  time.Duration // bounds each Redis step of a flush (Config.RedisTimeout)
	sem      chan struct{} // a slot per concurrent flush

	mu      sync.Mutex
	pending []*pendingSubmit
}

type pendingSubmit struct {
	ids    taskIDs
	kwargs map[string]any
	done   chan error // buffered: the flusher never waits for the submitter
}

func newSubmitter(ids idStore, producer *celerycompat.Producer, timeout time.Duration) *submitter {
	return &submitter{ids: ids, producer: producer, timeout: timeout, sem: make(chan struct{}, submitFlushers)}
}

// submit records ids and publishes tasks.process_task with kwargs, batched with whatever other
// submissions are waiting. It returns nil once both are in Redis. On error neither remains,
// except a mapping whose clean-up also failed, or a publish Redis ran whose reply was lost
// (see NewAPI). It does not give up when ctx ends:
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
	all := make([]taskIDs, n)
	for i, p := range batch {
		all[i] = p.ids
	}
	// Writing the mapping is idempotent (the same values again), so a stale connection is
	// retried; its deadline is also checked by Redis, so a write Redis executes after the
	// client was answered 503 (it hung, then resumed) writes nothing.
	mctx, mcancel := context.WithTimeout(ctx, s.timeout)
	defer mcancel()
	deadline := time.Now().Add(s.timeout)
	if err := retryBroken(mctx, func(ctx context.Context) error { return s.ids.putBatch(ctx, all, deadline) }); err != nil {
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
	// The publish's deadline is checked by Redis too (BrokerConfig.ClientSideDeadline is off):
	// a publish Redis runs after it, once the client was answered 503, queues nothing.
	pctx, pcancel := context.WithTimeout(ctx, s.timeout)
	defer pcancel()
	_, errs := s.producer.SendBatch(pctx, reqs)
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

// putScript writes the id mapping unless Redis's clock is past the writer's deadline.
//
//	KEYS[2i-1], KEYS[2i]  the two keys of pair i (business id, Celery id)
//	ARGV[1]               the deadline, Unix ms; ARGV[2] the TTL in seconds
//	ARGV[2+i]             pair i's value
//	returns               1 when written, 0 when past the deadline (nothing written)
//
// A request whose deadline passed was answered 503; a write Redis executes only later (it was
// paused with the command in its socket) must not leave keys behind. This compares the API's
// clock with Redis's: they must agree to within the deadline (RedisTimeout), as NTP keeps them.
var putScript = redis.NewScript(-1, `
redis.replicate_commands()
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[1]) then
  return 0
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[2 + math.ceil(i / 2)], 'EX', ARGV[2])
end
return 1
`)

// errPastDeadline is putBatch's error when Redis ran the write after its deadline.
var errPastDeadline = errors.New("rig: id mapping reached Redis after its deadline")

// putBatch records both keys of every pair, all or nothing, unless Redis runs it after
// deadline.
func (s idStore) putBatch(ctx context.Context, all []taskIDs, deadline time.Time) error {
	c, err := s.pool.GetContext(ctx)
	if err != nil {
		return fmt.Errorf("record task ids: %w", err)
	}
	defer c.Close()
	args := make([]any, 0, 3*len(all)+3)
	args = append(args, 2*len(all)) // the key count: the script takes any number of pairs
	for _, ids := range all {
		args = append(args, idKeyPrefix+ids.Business, idKeyPrefix+ids.Celery)
	}
	args = append(args, deadline.UnixMilli(), int64(s.ttl/time.Second))
	for _, ids := range all {
		val, _ := json.Marshal(ids) // two strings always encode
		args = append(args, val)
	}
	ok, err := redis.Int(putScript.DoContext(ctx, c, args...))
	switch {
	case err != nil:
		return fmt.Errorf("record task ids: %w", err)
	case ok != 1:
		return errPastDeadline
	}
	return nil
}
