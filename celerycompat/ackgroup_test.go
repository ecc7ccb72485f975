package celerycompat_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	cc "github.com/celerybridge/celerybridge/celerycompat"
)

// TestConcurrentAcksShareOneWrite: 64 acks arriving while one write is held up (CLIENT PAUSE)
// go out in one more MULTI, and each Ack returns with its own tag removed.
func TestConcurrentAcksShareOneWrite(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	const n = 64
	for i := range n {
		tag := fmt.Sprintf("tag-%d", i)
		s.r.Do(0, "HSET", "unacked", tag, "[{}, \"\", \"celery\"]")
		s.r.Do(0, "ZADD", "unacked_index", 1, tag)
	}
	before := commandStats(t, s.r)
	s.r.Do(0, "CLIENT", "PAUSE", 300, "WRITE")
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.broker.Ack(context.Background(), fmt.Sprintf("tag-%d", i))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if h := s.hlen("unacked"); h != 0 {
		t.Fatalf("%d tags still held after every Ack returned", h)
	}
	_, by := statsDelta(before, commandStats(t, s.r))
	if by["exec"] > 2 {
		t.Fatalf("%d MULTI/EXEC for %d concurrent acks, want at most 2", by["exec"], n)
	}
}

// TestAckErrorReachesEveryCaller: acks sharing a failed write all get its error.
func TestAckErrorReachesEveryCaller(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	s.r.Stop()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.broker.Ack(context.Background(), fmt.Sprintf("tag-%d", i))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, cc.ErrBroker) {
			t.Errorf("ack %d: %v, want ErrBroker", i, err)
		}
	}
}
