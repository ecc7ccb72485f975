package celerycompat_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	cc "github.com/celerybridge/celerybridge/celerycompat"
)

// BenchmarkWorkerEventsOnOff measures what task events cost: the drain rate of N no-op tasks
// (results stored, acks_late) with events off, and with task events on and a subscriber reading
// them as Flower does, in the same run: five interleaved rounds each, medians reported (the
// machine is shared, so single runs are noisy). Run:
//
//	go test -run '^$' -bench WorkerEventsOnOff -benchtime 1x ./celerycompat/
func BenchmarkWorkerEventsOnOff(b *testing.B) {
	const n, rounds = 8000, 5
	for _, conc := range []int{1, 8} {
		b.Run(map[int]string{1: "c1", 8: "c8"}[conc], func(b *testing.B) {
			for range b.N {
				var off, on []float64
				for range rounds {
					off = append(off, eventsDrainRate(b, conc, false, n))
					on = append(on, eventsDrainRate(b, conc, true, n))
				}
				offM, onM := median(off), median(on)
				b.ReportMetric(offM, "off_tasks/s")
				b.ReportMetric(onM, "on_tasks/s")
				b.ReportMetric((offM-onM)/offM*100, "overhead_%")
			}
		})
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func eventsDrainRate(b *testing.B, conc int, events bool, n int) float64 {
	b.Helper()
	s := newWStackTB(b, cc.BrokerConfig{})
	const batch = 1000
	for start := 0; start < n; start += batch {
		reqs := make([]cc.TaskRequest, min(batch, n-start))
		for i := range reqs {
			reqs[i] = cc.TaskRequest{Name: "ev.add", Args: []any{start + i, 1}}
		}
		if _, errs := s.producer.SendBatch(context.Background(), reqs); errs[0] != nil {
			b.Fatal(errs[0])
		}
	}
	var seen atomic.Int64
	if events { // a subscriber, so that Redis does the fan-out work it does for Flower
		c, err := s.pool.GetContext(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		psc := redis.PubSubConn{Conn: c}
		if err := psc.PSubscribe("/0.celeryev/*"); err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				switch m := psc.Receive().(type) {
				case redis.Message:
					seen.Add(1)
				case redis.Subscription:
					if m.Count == 0 {
						return
					}
				case error:
					return
				}
			}
		}()
		b.Cleanup(func() { _ = psc.PUnsubscribe(); <-done; c.Close() })
	}
	w := s.newWorkerTB(b, cc.WorkerConfig{Concurrency: conc, PrefetchMultiplier: 4, SendEvents: events})
	_ = w.Register("ev.add", addHandler)
	start := time.Now()
	stop := runWorkerTB(b, w)
	rc := s.rpool.Get()
	defer rc.Close()
	for {
		got, err := redis.Int(rc.Do("DBSIZE"))
		if err != nil {
			b.Fatal(err)
		}
		if got >= n {
			break
		}
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("%d of %d results", got, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
	d := time.Since(start)
	if err := stop(); err != nil {
		b.Fatal(err)
	}
	if events && seen.Load() == 0 {
		b.Fatal("events on, none seen")
	}
	return float64(n) / d.Seconds()
}
