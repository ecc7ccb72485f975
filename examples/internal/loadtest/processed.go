package loadtest

import (
	"context"
	"fmt"
	"sync"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/celerybridge/celerybridge/celerycompat"
)

// Processed counts what the result backend says about the submitted tasks.
type Processed struct {
	ByState map[celerycompat.State]int // state of each submitted Celery id (PENDING: nothing stored)
	Missing []string                   // business ids whose task is not SUCCESS or FAILURE
}

// Count returns the tasks in SUCCESS or FAILURE: the ones a worker processed.
func (p *Processed) Count() int {
	return p.ByState[celerycompat.StateSuccess] + p.ByState[celerycompat.StateFailure]
}

// CountProcessed reads the result backend state of every accepted task of sub, through cfg.Pool
// or a pool dialled from cfg.RedisURL, with Celery's default key names (celery-task-meta-<id>).
func CountProcessed(ctx context.Context, cfg Config, sub *Submission) (*Processed, error) {
	cfg = cfg.withDefaults()
	pool := cfg.Pool
	if pool == nil {
		u, err := celerycompat.ParseRedisURL(cfg.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("loadtest: REDIS_URL: %w", err)
		}
		p := u.NewPool(8)
		defer p.Close()
		pool = p
	}
	backend, err := celerycompat.NewBackend(pool, celerycompat.BackendConfig{})
	if err != nil {
		return nil, fmt.Errorf("loadtest: result backend: %w", err)
	}
	defer backend.Close()

	tasks := sub.Accepted()
	states := make([]celerycompat.State, len(tasks))
	errs := make([]error, len(tasks))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, t := range tasks {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			meta, err := backend.GetMeta(ctx, t.CeleryTaskID)
			if err != nil {
				errs[i] = err
				return
			}
			states[i] = meta.Status
		}()
	}
	wg.Wait()
	p := &Processed{ByState: map[celerycompat.State]int{}}
	for i, t := range tasks {
		if errs[i] != nil {
			return nil, fmt.Errorf("loadtest: result of task %d (%s): %w", t.Index, t.CeleryTaskID, errs[i])
		}
		p.ByState[states[i]]++
		if states[i] != celerycompat.StateSuccess && states[i] != celerycompat.StateFailure {
			p.Missing = append(p.Missing, t.BusinessTaskID)
		}
	}
	return p, nil
}

// DeadLettered lists the business ids of sub's accepted tasks whose callback the worker's
// dispatcher gave up on: dead letters in the callback outbox (callback.Outbox on the broker,
// cfg.BrokerURL). They are missing callbacks with a known cause, and can be replayed: POST
// /callbacks/dead/replay on the Go API, or callback.Outbox.Replay.
func DeadLettered(ctx context.Context, cfg Config, sub *Submission) ([]string, error) {
	cfg = cfg.withDefaults()
	pool := cfg.BrokerPool
	if pool == nil {
		u, err := celerycompat.ParseRedisURL(cfg.BrokerURL)
		if err != nil {
			return nil, fmt.Errorf("loadtest: broker url: %w", err)
		}
		p := u.NewPool(2)
		defer p.Close()
		pool = p
	}
	ob, err := callback.NewOutbox(pool, callback.OutboxConfig{})
	if err != nil {
		return nil, fmt.Errorf("loadtest: callback outbox: %w", err)
	}
	dls, err := ob.DeadLetters(ctx, 0)
	if err != nil {
		return nil, fmt.Errorf("loadtest: dead letters: %w", err)
	}
	dead := make(map[string]bool, len(dls))
	for _, d := range dls {
		dead[d.TaskID], dead[d.CeleryTaskID] = true, true
	}
	var out []string
	for _, t := range sub.Accepted() {
		if dead[t.BusinessTaskID] || dead[t.CeleryTaskID] {
			out = append(out, t.BusinessTaskID)
		}
	}
	return out, nil
}
