package celerycompat_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// The least a worker can do for one task, timed by latency.py like the real worker
// (BenchmarkIdleLatency): what the idle-latency goal is measured against. Each is a loop of one
// step on floorLatencies.

// boundLatencies: BRPOP the message (Celery's own pop, which records nothing un-acked and so may
// lose it), read its id, and store a SUCCESS result with SETEX and PUBLISH in one round trip. No
// body decode, no ack, no hooks, no result encoding: no real worker does less, so its latency
// bounds any worker's on this machine.
func boundLatencies(b *testing.B, args ...string) []float64 {
	s := benchStack(b)
	broker := s.pool.Get()
	defer broker.Close()
	return floorLatencies(b, s, func(ctx context.Context, backend redis.Conn) error {
		reply, err := redis.ByteSlices(broker.Do("BRPOP", "celery", 1))
		if errors.Is(err, redis.ErrNil) {
			return nil // the second passed
		}
		if err != nil {
			return fmt.Errorf("BRPOP: %w", err)
		}
		id, _, err := envelopeIDs(reply[1])
		if err != nil {
			return err
		}
		return storeNull(backend, id)
	}, args...)
}

// lossFreeLatencies: wait with BLMOVE celery celery (Broker.WaitList: removes nothing), take the
// message with the broker's own atomic fetch script and decode (Broker.Fetch), store SUCCESS
// with SETEX+PUBLISH in one round trip, ack (Broker.Ack). No hooks, no handler, no result
// encoding, one goroutine: a worker that closes kombu's loss window the way ours does (the
// fetch sent only once the wait has returned) cannot do less.
func lossFreeLatencies(b *testing.B, args ...string) []float64 {
	s := benchStack(b)
	return floorLatencies(b, s, func(ctx context.Context, backend redis.Conn) error {
		ok, err := s.broker.WaitList(ctx, "celery", time.Second)
		if err != nil || !ok {
			return err
		}
		ds, err := s.broker.Fetch(ctx, []string{"celery"}, 1)
		if err != nil || len(ds) == 0 {
			return err
		}
		if err := storeNull(backend, ds[0].Message.ID); err != nil {
			return err
		}
		return s.broker.Ack(ctx, ds[0].Tag)
	}, args...)
}

// pipeFetch is a fetch script reduced to the common case (one list, a well-formed envelope):
// RPOP, record the message un-acked under its delivery tag, return it.
var pipeFetch = redis.NewScript(3, `
local raw = redis.call('RPOP', KEYS[1])
if not raw then return false end
local tag = cjson.decode(raw)['properties']['delivery_tag']
redis.call('ZADD', KEYS[3], ARGV[1], tag)
redis.call('HSET', KEYS[2], tag, raw)
return raw
`)

// pipelinedLatencies is lossFreeLatencies with the fetch sent behind the wait in one write, so
// that Redis runs it the moment the wait returns: one round trip less. Our worker does not do
// this: the fetch would then run before the worker knows it woke, and the wake/fetch split that
// TestWorkerKilledBetweenWakeAndFetchLosesNothing pins (a kill after the wake leaves the message
// waiting, not held) would no longer hold.
func pipelinedLatencies(b *testing.B, args ...string) []float64 {
	s := benchStack(b)
	c := s.pool.Get()
	defer c.Close()
	if err := pipeFetch.Load(c); err != nil {
		b.Fatal(err)
	}
	return floorLatencies(b, s, func(ctx context.Context, backend redis.Conn) error {
		_ = c.Send("BLMOVE", "celery", "celery", "RIGHT", "RIGHT", 1)
		_ = pipeFetch.SendHash(c, "celery", "unacked", "unacked_index", time.Now().Unix())
		if err := c.Flush(); err != nil {
			return err
		}
		if _, err := c.Receive(); err != nil && !errors.Is(err, redis.ErrNil) {
			return err
		}
		raw, err := redis.Bytes(c.Receive())
		if errors.Is(err, redis.ErrNil) {
			return nil
		}
		if err != nil {
			return err
		}
		id, tag, err := envelopeIDs(raw)
		if err != nil {
			return err
		}
		if err := storeNull(backend, id); err != nil {
			return err
		}
		return s.broker.Ack(ctx, tag)
	}, args...)
}

// envelopeIDs reads a kombu envelope's task id and delivery tag.
func envelopeIDs(raw []byte) (id, tag string, err error) {
	var env struct {
		Headers struct {
			ID string `json:"id"`
		} `json:"headers"`
		Properties struct {
			Tag string `json:"delivery_tag"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(raw, &env); err != nil || env.Headers.ID == "" {
		return "", "", fmt.Errorf("not an envelope (%v): %.200s", err, raw)
	}
	return env.Headers.ID, env.Properties.Tag, nil
}

// storeNull stores a SUCCESS with a null result in one round trip.
func storeNull(backend redis.Conn, id string) error {
	key := "celery-task-meta-" + id
	meta := `{"status": "SUCCESS", "result": null, "traceback": null, "children": [], ` +
		`"date_done": null, "task_id": "` + id + `"}`
	_ = backend.Send("SETEX", key, 3600, meta)
	_ = backend.Send("PUBLISH", key, meta)
	_, err := backend.Do("")
	return err
}

// floorLatencies runs step in a loop (one task per call, or nothing when its wait timed out)
// while latency.py times the stack; a step error fails the benchmark.
func floorLatencies(b *testing.B, s *wstack, step func(ctx context.Context, backend redis.Conn) error, args ...string) []float64 {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		backend := s.rpool.Get()
		defer backend.Close()
		for ctx.Err() == nil {
			if err := step(ctx, backend); err != nil && ctx.Err() == nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	ms := pyLatencies(b, s, args...)
	cancel()
	if err := <-done; err != nil {
		b.Fatal(fmt.Errorf("floor worker: %w", err))
	}
	return ms
}
